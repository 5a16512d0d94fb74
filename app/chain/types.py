"""Typed inputs and outputs of the chain and its steps."""

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from app.llm.base import OnDelta


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the chat's recent history."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class ChainRequest:
    """A question, where to look, and who asks (for the trace)."""

    message: str
    collections: Sequence[str]
    history: Sequence[Turn] = ()
    user_id: str | None = None
    session_id: str | None = None
    # The caller's id of this run (e.g. chat and message id); the trace id derives from it.
    run_key: str | None = None
    # The option the user picked after a clarifying question; the clarify step is skipped.
    clarification: str | None = None
    # Receives the answer's text while it is generated.
    on_delta: OnDelta | None = None
    # Skip the answer cache's lookup ("Fresh answer"); the new answer replaces the entry.
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class Language:
    """The question's language: its name for the prompts, and the letters its output may use."""

    code: str
    name: str
    letters: str


# Written as escapes: Cyrillic and Latin look-alikes are indistinguishable in source.
_CYRILLIC_LETTERS = "\u0410-\u044f\u0401\u0451"
_LATIN_LETTERS = "A-Za-zÀ-ÖØ-öø-ÿ"
RUSSIAN = Language("ru", "Russian", _CYRILLIC_LETTERS + "A-Za-z")
ENGLISH = Language("en", "English", _LATIN_LETTERS)
# A word is a run of letters of one script ("Outlook-клиент" is one of each).
_CYRILLIC_WORD = re.compile(f"[{_CYRILLIC_LETTERS}]+")
_LATIN_WORD = re.compile(f"[{_LATIN_LETTERS}]+")


def detect_language(text: str) -> Language:
    """The script most of the words are in: "How do I reset my password in Бухгалтерия?"
    is English, "Как настроить Outlook на Android?" Russian. A tie goes to Russian: Russian
    questions name Latin-script products far more often than the reverse."""
    cyrillic = len(_CYRILLIC_WORD.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    return RUSSIAN if cyrillic and cyrillic >= latin else ENGLISH


@dataclass(frozen=True, slots=True)
class Passage:
    """One numbered excerpt of the context: one document's retrieved (and merged) chunks."""

    n: int
    collection: str
    doc_id: str
    title: str
    text: str
    source: str
    score: float
    # The section headings (below the title) the passage's chunks come from.
    sections: tuple[str, ...] = ()
    # The best chunk's point id (a source button opens it) and its page (PDF), if any.
    point_id: str = ""
    pages: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A cited document, as shown under an answer."""

    n: int
    title: str
    doc_id: str
    collection: str
    source: str
    url: str | None
    # The cited passage's best chunk (what "open the source" shows) and its pages (PDF).
    point_id: str = ""
    pages: tuple[int, ...] = ()

    @classmethod
    def of(cls, passage: Passage) -> "SourceRef":
        """The source behind a passage; a web source gets a link."""
        url = passage.source if passage.source.startswith(("http://", "https://")) else None
        return cls(
            passage.n,
            passage.title,
            passage.doc_id,
            passage.collection,
            passage.source,
            url,
            passage.point_id,
            passage.pages,
        )


class ResultKind(StrEnum):
    """What the chain produced."""

    ANSWER = "answer"
    CLARIFY = "clarify"
    NOT_FOUND = "not_found"
    ERROR = "error"


@dataclass(slots=True)
class ChainResult:
    """The outcome of one run, for the bot, the CLI and the benchmarks."""

    kind: ResultKind
    text: str
    trace_id: str
    query: str
    language: str
    options: list[str] = field(default_factory=list)
    sources: list[SourceRef] = field(default_factory=list)
    # Milliseconds per step, plus "llm" (time inside LLM calls) and "total".
    timings: dict[str, float] = field(default_factory=dict)
    # For kind "error": what failed, for logs (never shown to users as is).
    error: str | None = None
    # Served from the answer cache; and the cache entry this answer is (to evict on a 👎).
    cached: bool = False
    cache_entry: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        data = asdict(self)
        data["kind"] = self.kind.value
        return data
