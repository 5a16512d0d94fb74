# ruff: noqa: RUF001 - Russian word patterns: the Cyrillic letters are meant.
"""What a cached answer is keyed by: the normalised question, and its scope (everything else
that changes the answer: the collections the asker may read, the language, the prompts in
force and the chain's setup)."""

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from app.llm.base import LLMClient
from app.settings import ChainSettings

_TOKEN = re.compile(r"[^\W_]+(?:[.\-/+#][^\W_]+)*[+#]*")


def normalise(question: str) -> str:
    """The question as the exact tier compares it: case, "ё", spacing and punctuation
    around words do not count; words, numbers and their order do."""
    text = unicodedata.normalize("NFKC", question).casefold().replace("ё", "е")
    return " ".join(_TOKEN.findall(text))


def question_key(question: str) -> str:
    """16 hex digits of the normalised question."""
    return hashlib.sha256(normalise(question).encode()).hexdigest()[:16]


def scope_key(collections: Iterable[str], language: str, prompt_versions: str, setup: str) -> str:
    """32 hex digits: answers are shared within a scope and never across one. The sorted set
    of collections is the access boundary: a user who may read other collections has another
    scope, even for a subset."""
    parts = [sorted(set(collections)), language, prompt_versions, setup]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def chain_setup(settings: ChainSettings, llm: Mapping[str, LLMClient], answer_mode: str) -> str:
    """The chain's configuration that changes answers: its settings (retrieval depth, context
    size...), the answer mode and each step's model."""
    data: dict[str, Any] = settings.model_dump(mode="json", exclude={"prompts_dir"})
    data["answer_mode"] = answer_mode
    data["models"] = {step: client.model for step, client in sorted(llm.items())}
    return json.dumps(data, sort_keys=True)
