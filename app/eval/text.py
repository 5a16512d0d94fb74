"""Text checks that need no judge model: is a fact in an answer (numbers exactly, words by
stem, in Russian too), and which numbers and names of an answer no cited passage contains."""

import re
from collections.abc import Iterable
from functools import lru_cache

from kb.embedder import SparseEmbedder

_CYRILLIC = "\u0410-\u044f\u0401\u0451"
_LATIN = "A-Za-zÀ-ÖØ-öø-ÿ"
# A number: digits with inner dots, commas, colons or slashes (10.0.0.53, 10:00, 1,5).
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
# Thousands written with a (narrow, no-break) space: "15 000" is 15000.
_THOUSANDS = re.compile(r"(?<=\d)[ \u00a0\u202f](?=\d{3}(?!\d))")
_WORD = re.compile(f"[{_CYRILLIC}]+|[{_LATIN}]+")
_CITATION = re.compile(r"\[\d+\]")
_SENTENCE_END = re.compile(r"[.!?…:]\s*$|^\s*$|\n\s*[-*•\d.)]*\s*$")
# A name: a capitalised word (or an all-capitals one), Latin or Cyrillic.
_NAME = re.compile(f"[A-Z\u0410-\u042f\u0401][{_CYRILLIC}{_LATIN}]+")
# Without a stemmer, words match when they share this many first letters (or are equal).
_PREFIX = 5


def normalise(text: str) -> str:
    """Lower case, Cyrillic yo as ye, one space between words, thousands unspaced."""
    text = _THOUSANDS.sub("", text.casefold().replace("\u0451", "\u0435"))
    return " ".join(text.split())


def _numbers(text: str) -> set[str]:
    return {n.rstrip(".,:") for n in _NUMBER.findall(_THOUSANDS.sub("", text))}


def _language(word: str) -> str:
    return "ru" if re.match(f"[{_CYRILLIC}]", word) else "en"


class Stemmer:
    """Word keys from the Snowball stemmers BM25 uses (Qdrant's), or prefixes without them."""

    def __init__(self, sparse: SparseEmbedder | None = None) -> None:
        self._sparse = sparse

    @classmethod
    def default(cls) -> "Stemmer":
        """The BM25 stemmers when Qdrant Edge is installed, else prefix matching."""
        try:
            sparse = SparseEmbedder()
            sparse.embed_query("test", "en")
        except (ImportError, ValueError, RuntimeError):
            return cls(None)
        return cls(sparse)

    def keys(self, words: Iterable[str]) -> set[str]:
        """One key per word that is not a stop word: the same key for forms of one word."""
        return {key for word in words if (key := self._key(word))}

    def _key(self, word: str) -> str:
        word = word.casefold().replace("\u0451", "\u0435")
        if self._sparse is None:
            return word[:_PREFIX]
        indices = self._sparse.embed_query(word, _language(word)).indices
        # A stop word has no BM25 term: it need not be found.
        return f"{_language(word)}{indices[0]}" if indices else ""


@lru_cache(maxsize=1)
def default_stemmer() -> Stemmer:
    """One Stemmer for the process."""
    return Stemmer.default()


def has_fact(text: str, fact: str, stemmer: Stemmer | None = None) -> bool:
    """Whether the text states the fact: as written (after normalisation), or with each of
    its numbers exactly and each of its words in some form."""
    if normalise(fact) in normalise(text):
        return True
    stemmer = stemmer or default_stemmer()
    numbers = _numbers(fact)
    if not numbers <= _numbers(text):
        return False
    words = stemmer.keys(_WORD.findall(normalise(_NUMBER.sub(" ", fact))))
    return bool(numbers or words) and words <= stemmer.keys(_WORD.findall(normalise(text)))


def unsupported(answer: str, passages: Iterable[str]) -> list[str]:
    """Numbers and names in the answer that appear in no passage: a number not among the
    passages' numbers, a capitalised word (not at a sentence start) none of them contains."""
    answer = _CITATION.sub(" ", answer)
    known = " ".join(passages)
    found = [n for n in sorted(_numbers(answer) - _numbers(known))]
    words = normalise(known)
    for match in _NAME.finditer(answer):
        before = answer[: match.start()]
        if _SENTENCE_END.search(before) or match.group() in found:
            continue
        if normalise(match.group()) not in words:
            found.append(match.group())
    return found
