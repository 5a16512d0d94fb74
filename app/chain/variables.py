"""What prompt templates are rendered with: the same variables for every step (a template
uses the ones it needs), including the request-time parts of the output regexes."""

import re
from collections.abc import Sequence
from typing import Any

from app import texts
from app.chain.quote import literal, quote_regex
from app.chain.types import Language, Passage, Turn

__all__ = ["foreign_words", "literal", "option_candidates", "prompt_variables"]

_WORD = re.compile(r"[^\W\d_]+")


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


def foreign_words(query: str, letters: str) -> list[str]:
    """The query's words in letters outside the language's alphabet ("Бухгалтерия" in an
    English question), which its answer must still be able to name."""
    outside = re.compile(f"[^{letters}]")
    return list(dict.fromkeys(w for w in _WORD.findall(query) if outside.search(w)))


def prompt_variables(
    *,
    query: str,
    language: Language,
    passages: Sequence[Passage] = (),
    message: str = "",
    history: Sequence[Turn] = (),
) -> dict[str, Any]:
    """The variables of every prompt: the question, the passages, the language and its
    letters, the refusal, and the regex parts that name what was retrieved or asked
    (citation numbers, the clarifying options, the quotable sentences, foreign words)."""
    choices = option_candidates(passages, language.letters)
    refusal = texts.text("refusal", language.code)
    words = foreign_words(query, language.letters)
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
        "refusal": refusal,
        "refusal_regex": literal(refusal),
        # Alternatives to append to an alternation: "" or "|Бухгалтерия".
        "words": "".join(f"|{literal(w)}" for w in words),
        "quotes": quote_regex(passages) or literal(refusal),
        # Whether an answer may still refuse (see Answerer._focus for when it may not).
        "refuse": True,
    }
