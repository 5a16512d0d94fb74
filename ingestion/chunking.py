"""Chunking that follows structure: paragraphs packed within a token budget, never across pages,
each chunk keeping the heading path where it starts."""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ingestion.readers.base import ParsedDocument

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+(?=\S)")
_PARAGRAPH = re.compile(r"\n\s*\n")
# A token is rarely shorter than two characters of prose (four in English, three in Russian):
# windows of this many characters per budget token usually fit without a word-level split.
_WINDOW_CHARS_PER_TOKEN = 2


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A chunk before embedding: where it sits in the document and its text."""

    heading_path: tuple[str, ...]
    text: str
    page: int | None = None


@dataclass(frozen=True, slots=True)
class _Unit:
    heading_path: tuple[str, ...]
    page: int | None
    text: str
    tokens: int


def _split_long(text: str, budget: int, count: TokenCounter) -> Iterator[tuple[str, int]]:
    """Split an over-long paragraph at sentences, then lines, then words."""
    for pattern in (_SENTENCE_END, re.compile(r"\n"), re.compile(r"\s+")):
        pieces = [p for p in pattern.split(text) if p.strip()]
        if len(pieces) > 1:
            break
    else:
        # One unbroken token run (a hash, a URL): cut by characters.
        step = max(1, len(text) * budget // max(1, count(text)))
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
    buffer: list[str] = []
    used = 0
    for piece in pieces:
        tokens = count(piece)
        if tokens > budget:
            if buffer:
                yield " ".join(buffer), used
                buffer, used = [], 0
            yield from _split_long(piece, budget, count)
            continue
        if buffer and used + tokens > budget:
            yield " ".join(buffer), used
            buffer, used = [], 0
        buffer.append(piece)
        used += tokens
    if buffer:
        yield " ".join(buffer), used


def _windows(text: str, size: int) -> Iterator[str]:
    """A very long run of text in pieces of about size characters, cut at a sentence end, else
    at a space, else anywhere: each is then counted once (tokenizing a whole book-length line,
    or counting it word by word, costs minutes and gigabytes)."""
    start = 0
    while len(text) - start > size:
        end = start + size
        window = text[start:end]
        cut = max(window.rfind(". "), window.rfind("\n"))
        if cut < size // 2:
            cut = window.rfind(" ")
        cut = cut + 1 if cut >= size // 2 else size
        yield text[start : start + cut]
        start += cut
    yield text[start:]


def _units(doc: ParsedDocument, budget: int, count: TokenCounter) -> Iterator[_Unit]:
    # Runs longer than this are cut into windows of _WINDOW_CHARS_PER_TOKEN * budget first.
    window = _WINDOW_CHARS_PER_TOKEN * budget
    for section in doc.sections:
        for raw in _PARAGRAPH.split(section.text):
            stripped = raw.strip()
            if not stripped:
                continue
            runs = _windows(stripped, window) if len(stripped) > 8 * window else [stripped]
            for run in runs:
                paragraph = run.strip()
                if not paragraph:
                    continue
                tokens = count(paragraph)
                if tokens <= budget:
                    yield _Unit(section.heading_path, section.page, paragraph, tokens)
                else:
                    for piece, piece_tokens in _split_long(paragraph, budget, count):
                        yield _Unit(section.heading_path, section.page, piece, piece_tokens)


def _tail(text: str, budget: int, count: TokenCounter) -> str:
    """The last whole sentences of text that fit in budget tokens (the overlap)."""
    sentences = _SENTENCE_END.split(text)
    kept: list[str] = []
    used = 0
    for sentence in reversed(sentences):
        tokens = count(sentence)
        if used + tokens > budget:
            break
        kept.insert(0, sentence)
        used += tokens
    return " ".join(kept)


def chunk_document(
    doc: ParsedDocument, count: TokenCounter, max_tokens: int = 200, overlap_tokens: int = 32
) -> list[TextChunk]:
    """Pack paragraphs into chunks of at most max_tokens; a section that continues into the
    next chunk repeats its last sentences (up to overlap_tokens) so no fact is cut in half."""
    chunks: list[TextChunk] = []
    parts: list[str] = []
    used = 0
    start: _Unit | None = None
    last: _Unit | None = None
    for unit in _units(doc, max_tokens, count):
        new_section = last is not None and unit.heading_path != last.heading_path
        heading_line = unit.heading_path[-1] if new_section and unit.heading_path else ""
        extra = count(heading_line) if heading_line else 0
        fits = used + extra + unit.tokens <= max_tokens
        # Small neighbouring sections share a chunk; a section of some size starts its own.
        starts_fresh = new_section and used >= max_tokens // 3
        if (
            start is not None
            and last is not None
            and (not fits or starts_fresh or unit.page != last.page)
        ):
            chunks.append(TextChunk(start.heading_path, "\n\n".join(parts), start.page))
            carry = ""
            if not new_section and unit.page == last.page and overlap_tokens > 0:
                carry = _tail(parts[-1], min(overlap_tokens, max_tokens - unit.tokens), count)
            parts = [carry] if carry else []
            used = count(carry) if carry else 0
            start, heading_line = unit, ""
        if start is None:
            start = unit
        if heading_line:
            parts.append(heading_line)
            used += extra
        parts.append(unit.text)
        used += unit.tokens
        last = unit
    if start is not None and parts:
        chunks.append(TextChunk(start.heading_path, "\n\n".join(parts), start.page))
    return chunks
