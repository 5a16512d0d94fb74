"""What prompt templates are rendered with: the same variables for every step (a template
uses the ones it needs), including the request-time parts of the output regexes."""

import re
from collections.abc import Sequence
from typing import Any

from app.chain.types import Language, Passage, Turn

_META = frozenset("\\.^$*+?()[]{}|")


def literal(text: str) -> str:
    """A regex matching text literally; only the metacharacters every engine knows are
    escaped (vLLM's backends and llguidance differ on escapes of other punctuation)."""
    return "".join(f"\\{ch}" if ch in _META else ch for ch in text)


def option_candidates(passages: Sequence[Passage], letters: str, limit: int = 12) -> list[str]:
    """What a clarifying question may offer: the sections (or, without sections, the titles)
    of the retrieved passages, short and in the question's alphabet."""
    allowed = re.compile(f"[{letters}0-9][{letters}0-9 ,.;:'\"()%&+/#№-]{{0,59}}")
    found: dict[str, None] = {}
    for passage in passages:
        for raw in passage.sections or (passage.title,):
            name = " ".join(raw.split())
            if allowed.fullmatch(name) and name.casefold() not in map(str.casefold, found):
                found[name] = None
    return list(found)[:limit]


def prompt_variables(
    *,
    query: str,
    language: Language,
    passages: Sequence[Passage] = (),
    message: str = "",
    history: Sequence[Turn] = (),
) -> dict[str, Any]:
    """The variables of every prompt: the question, the passages, the language and its
    letters, and the regex parts that name what was retrieved (citation numbers, the
    clarifying options)."""
    choices = option_candidates(passages, language.letters)
    return {
        "message": message or query,
        "history": history,
        "query": query,
        "passages": passages,
        "language": language.name,
        "letters": language.letters,
        "citations": "|".join(str(p.n) for p in passages),
        "choices": choices,
        "options": "|".join(literal(c) for c in choices),
    }
