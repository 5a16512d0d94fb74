"""Quote mode: an answer made only of sentences of the retrieved passages, each followed by
its passage's citation, so that even a tiny model answers by choosing what to quote and
nothing it says can be unsupported.

The output regex is built per request. It allows the refusal (without a citation) or one run
of up to RUN consecutive sentences of one passage, each at most once, in passage order. Runs
keep the regex linear in the passages' text (each sentence occurs in at most RUN runs): a
regex for "any increasing choice of up to three sentences" needs more than linear size, and
without a cap a small model copies on to the end of the passage."""

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from app.chain.types import Passage

# Sentences in one answer, at most.
RUN = 3
# A longer sentence is cut at clause boundaries into pieces of at most this many characters.
MAX_CHARS = 200
# Between quoted sentences: each on its own line.
SEPARATOR = "\n"

_META = frozenset("\\.^$*+?()[]{}|")
# As a translation table: a loop over characters in Python made literal() most of
# quote_regex's time (it escapes every sentence up to RUN times).
_ESCAPES = str.maketrans({ch: f"\\{ch}" for ch in _META})
_HEADING = re.compile(r"#{1,6}\s")
_LIST_ITEM = re.compile(r"(?:[-*•]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"```|~~~")
# A sentence ends at . ! ? or … followed by space and what starts a sentence.
_SENTENCE_END = re.compile("(?<=[.!?…])\\s+(?=[\"'«“„(\\[]?[A-Z\u0410-\u042f\u04010-9])")
# Clause boundaries: after , ; : or before a dash set off by spaces.
_CLAUSE_END = re.compile("(?<=[,;:])\\s+|\\s+(?=[\u2014\u2013]\\s)")
_LETTER = re.compile(r"[^\W\d_]")
_ENDS = re.compile(r"[.!?:;…)]$")
_CITATION = re.compile(r"\s*\[\d+\]")


def literal(text: str) -> str:
    """A regex matching text literally; only the metacharacters every engine knows are
    escaped (vLLM's backends and llguidance differ on escapes of other punctuation)."""
    return text.translate(_ESCAPES)


@dataclass(frozen=True, slots=True)
class Quote:
    """A sentence (or clause) of passage n, as it may be quoted."""

    n: int
    text: str


def _paragraph(lines: list[str], item: bool) -> str:
    """Wrapped lines as one; "" for a heading written as a line of its own (one short line
    without final punctuation that is not a list item)."""
    joined = " ".join(lines)
    if len(lines) == 1 and not item and len(joined) <= 60 and not _ENDS.search(joined):
        return ""
    return joined


def _blocks(text: str) -> Iterator[str]:
    """Paragraphs, list items, table rows and code lines, each joined onto one line
    (documents wrap their paragraphs); headings are left out: they are not answers."""
    lines: list[str] = []
    item = in_code = False
    for raw in text.splitlines():
        line = raw.strip()
        starts_item = _LIST_ITEM.match(line) is not None
        own_line = in_code or "|" in line or _FENCE.match(line) or _HEADING.match(line)
        if not line or own_line or line == "…" or starts_item:
            yield _paragraph(lines, item)
            lines, item = [], starts_item
        if _FENCE.match(line):
            in_code = not in_code
        elif in_code or "|" in line:
            yield line
        elif line and line != "…" and not _HEADING.match(line):
            lines.append(_LIST_ITEM.sub("", line, count=1) if starts_item else line)
    yield _paragraph(lines, item)


def _clip(sentence: str) -> list[str]:
    """A sentence in pieces of at most MAX_CHARS, cut at clause boundaries where it can be,
    else at spaces."""
    if len(sentence) <= MAX_CHARS:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for whole in _CLAUSE_END.split(sentence):
        clause = whole
        while len(clause) > MAX_CHARS:
            cut = clause.rfind(" ", 0, MAX_CHARS) if " " in clause[:MAX_CHARS] else MAX_CHARS
            pieces.extend(p for p in (current, clause[:cut]) if p)
            current, clause = "", clause[cut:].lstrip()
        if current and len(current) + 1 + len(clause) > MAX_CHARS:
            pieces.append(current)
            current = clause
        else:
            current = f"{current} {clause}" if current else clause
    if current:
        pieces.append(current)
    return pieces


def sentences(text: str) -> list[str]:
    """A passage's text as the sentences (or clauses) it may be quoted by, in order; each is
    a piece of the text with its whitespace collapsed."""
    found: list[str] = []
    for block in _blocks(text):
        for sentence in _SENTENCE_END.split(" ".join(block.split())):
            if len(_LETTER.findall(sentence)) >= 2:
                found.extend(_clip(sentence))
    return found


def quotes(passages: Sequence[Passage]) -> list[Quote]:
    """Every quotable sentence of the passages, in passage order."""
    return [Quote(p.n, s) for p in passages for s in sentences(p.text)]


def _run(items: Sequence[Quote]) -> str:
    """A regex for items[0], optionally followed by items[1], then items[2], ..."""
    first, *rest = items
    step = f"{literal(first.text)} \\[{first.n}\\]"
    return step if not rest else f"{step}({literal(SEPARATOR)}{_run(rest)})?"


def run_regex(passage: Passage, start: int) -> str:
    """The run of up to RUN sentences of a passage from sentence number start (0-based)."""
    found = sentences(passage.text)[start : start + RUN]
    return _run([Quote(passage.n, s) for s in found])


def quote_regex(passages: Sequence[Passage]) -> str:
    """The quotable runs of the passages as one alternation: 1 to RUN consecutive sentences
    of one passage, each followed by " [n]" ("" when there is nothing to quote)."""
    return _quote_regex(tuple(passages))


# Relevance, clarify and the answer render their prompts with the same passages: built once
# per question, not three times (about 13 ms of the event loop each for a 3,000-token context).
@functools.lru_cache(maxsize=256)
def _quote_regex(passages: tuple[Passage, ...]) -> str:
    alternatives: list[str] = []
    for passage in passages:
        found = sentences(passage.text)
        for i in range(len(found)):
            run = [Quote(passage.n, s) for s in found[i : i + RUN]]
            alternatives.append(_run(run))
    return "|".join(alternatives)


def normalized(text: str) -> str:
    """Whitespace collapsed and citations removed, for comparing an answer with passages."""
    return " ".join(_CITATION.sub("", text).split())


def unquoted(answer: str, passages: Sequence[Passage]) -> list[str]:
    """The sentences of an answer that are not verbatim in any passage (whitespace aside)."""
    sources = [" ".join(p.text.split()) for p in passages]
    return [
        s
        for line in answer.splitlines()
        for s in sentences(normalized(line))
        if not any(s in source for source in sources)
    ]
