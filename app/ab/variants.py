"""Variants of a prompt and who gets which.

PROMPT_VARIANTS names, per prompt, the labels users are split between and their weights:
"answer=production:50,prod-b:50;clarify=production:90,prod-b:10". A label is a Langfuse
prompt label and, at the same time, the file `prompts/<name>.<label>.md` beside the default;
the default label (LANGFUSE_PROMPT_LABEL) is the file `prompts/<name>.md`. Weights are
relative (they need not add up to 100); a weight of 0 takes a variant out of the split.
"""

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Langfuse's label alphabet; a label also ends up in a file name and a trace tag.
LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_NAME = re.compile(r"[A-Za-z0-9_-]+")
# A trace tag per prompt under A/B: "prompt:answer=prod-b".
TAG_PREFIX = "prompt:"


@dataclass(frozen=True, slots=True)
class Variant:
    """One label of a prompt and its share of the users."""

    label: str
    weight: float


Variants = Mapping[str, tuple[Variant, ...]]


def parse_variants(text: str) -> dict[str, tuple[Variant, ...]]:
    """The PROMPT_VARIANTS value by prompt name; ValueError saying what is wrong."""
    parsed: dict[str, tuple[Variant, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, spec = (s.strip() for s in part.partition("="))
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(f"{part!r}: expected NAME=LABEL:WEIGHT,LABEL:WEIGHT")
        if name in parsed:
            raise ValueError(f"prompt {name!r} is given twice")
        variants = tuple(_variant(name, v.strip()) for v in spec.split(","))
        labels = [v.label for v in variants]
        if len(set(labels)) != len(labels):
            raise ValueError(f"prompt {name!r}: a label is given twice")
        if len(variants) < 2:
            raise ValueError(f"prompt {name!r}: an A/B needs at least two labels")
        if not any(v.weight > 0 for v in variants):
            raise ValueError(f"prompt {name!r}: every weight is 0")
        parsed[name] = variants
    return parsed


def _variant(name: str, spec: str) -> Variant:
    label, sep, weight = spec.partition(":")
    if not sep or not LABEL.fullmatch(label):
        raise ValueError(
            f"prompt {name!r}: {spec!r} is not LABEL:WEIGHT (labels: a-z, 0-9, '.', '_', '-')"
        )
    try:
        value = float(weight)
    except ValueError:
        raise ValueError(f"prompt {name!r}: weight {weight!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"prompt {name!r}: weight {weight!r} must be 0 or more")
    return Variant(label, value)


def assign(name: str, user_id: str, variants: Sequence[Variant]) -> str:
    """The label a user gets for a prompt: the same every time (a hash of the prompt's name
    and the user id, so two prompts under A/B split users independently), each label for
    about its share of the users."""
    total = sum(v.weight for v in variants)
    digest = hashlib.sha256(f"{name}\x00{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    chosen = [v for v in variants if v.weight > 0]
    for variant in chosen:
        point -= variant.weight
        if point < 0:
            return variant.label
    return chosen[-1].label  # rounding at the very top of the range


def tag(name: str, label: str) -> str:
    """The trace tag saying which variant of a prompt a run used."""
    return f"{TAG_PREFIX}{name}={label}"


def parse_tag(text: str) -> tuple[str, str] | None:
    """(prompt, label) of a variant tag; None for other tags."""
    if not text.startswith(TAG_PREFIX):
        return None
    name, sep, label = text[len(TAG_PREFIX) :].partition("=")
    return (name, label) if sep and name and label else None
