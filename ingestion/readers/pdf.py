"""PDF reader: one section per page, outline bookmarks as heading paths.

Uses pypdf directly rather than llama-index's PDFReader (which wraps the same pypdf): the
uploads arrive as bytes, PDFReader wants a path, and it neither exposes the outline nor tells a
corrupt file from an encrypted or a scanned one, which the user-facing reasons need.
"""

import io
import logging
import re
from collections.abc import Sequence

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, PyPdfError
from pypdf.generic import Destination

from ingestion.errors import UnreadableDocumentError
from ingestion.readers.base import ParsedDocument, ReaderLimits, Section
from ingestion.readers.text import fallback_title, normalize_newlines

logger = logging.getLogger(__name__)

# pypdf raises assorted built-in errors, not only its own, on malformed objects.
_MALFORMED = (PyPdfError, KeyError, ValueError, TypeError, AttributeError, IndexError)
_OUTLINE_ERRORS = (*_MALFORMED, RecursionError)
# Ligatures split into letters; soft hyphens and control characters (glyphs of fonts without a
# Unicode map) dropped.
_TRANSLATE = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
    | {"\ufb05": "st", "\ufb06": "st", "\xad": ""}
    | {code: None for code in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}
)
_SPACES = re.compile(r"[ \t\xa0\u2000-\u200b]+")
_LIST_ITEM = re.compile(r"([-*\u2013\u2014\u2022\u25aa\u25e6\u00b7]|\d{1,3}[.)]|[a-z][.)])\s")
# Below this width lines are too short (slides, tables) to tell wrapped lines from line breaks.
_MIN_WRAP_WIDTH = 40
_WIDE_SHARE = 0.75
_MAX_TITLE_CHARS = 120
_MEANINGLESS_TITLES = frozenset({"untitled", "unknown", "title", "document", "microsoft word"})
_FILE_NAME = re.compile(r"\.(pdf|docx?|odt|rtf|txt|pptx?|xlsx?|indd|qxd|tex|dvi|ps|tmp)$", re.I)
_PageStarts = dict[int, list[tuple[str, ...]]]


def read_pdf(name: str, data: bytes, limits: ReaderLimits | None = None) -> ParsedDocument:
    """Parse a PDF into one section per page (1-based `page`), titled from metadata or text."""
    limits = limits or ReaderLimits()
    try:
        reader = PdfReader(io.BytesIO(data))
        _unlock(reader)
        count = len(reader.pages)
        if count > limits.max_pages:
            raise UnreadableDocumentError(
                f"PDF has {count:,} pages, over the {limits.max_pages:,} page limit "
                "(INGEST_MAX_PAGES): split it, or raise the limit"
            )
        pages = [_page_text(reader, index) for index in range(count)]
        meta_title = _metadata_title(reader)
    except PyPdfError as exc:
        raise UnreadableDocumentError(_corrupt_reason(data, exc)) from exc
    if not any(pages):
        raise UnreadableDocumentError("PDF has no extractable text (scanned image?)")
    paths = _page_paths(_outline_starts(reader), len(pages))
    sections = [
        Section(heading_path=paths[index], text=text, page=index + 1)
        for index, text in enumerate(pages)
        if text
    ]
    title = meta_title or _first_line_title(sections[0].text) or fallback_title(name)
    return ParsedDocument(title=title, sections=sections)


def _unlock(reader: PdfReader) -> None:
    if not reader.is_encrypted:
        return
    # Many PDFs are encrypted only to restrict printing or copying: the user password is empty.
    try:
        result = reader.decrypt("")
    except DependencyError as exc:
        raise UnreadableDocumentError(
            "encrypted PDF: decrypting it needs the 'cryptography' package (reinstall the project)"
        ) from exc
    if result == PasswordType.NOT_DECRYPTED:
        raise UnreadableDocumentError("PDF is password-protected")


def _corrupt_reason(data: bytes, exc: PyPdfError) -> str:
    # pypdf's own messages ("Stream has ended unexpectedly") mean little to a user.
    if b"%PDF-" not in data[:1024]:
        return "corrupt PDF: not a PDF file (no %PDF header)"
    if b"%%EOF" not in data[-2048:]:
        return "corrupt PDF: the file is truncated (no end-of-file marker)"
    detail = " ".join(str(exc).split())[:150] or type(exc).__name__
    return f"corrupt PDF: {detail}"


def _page_text(reader: PdfReader, index: int) -> str:
    """The cleaned text of one page; a broken page is skipped, not the whole document."""
    try:
        raw = reader.pages[index].extract_text()
    except _MALFORMED as exc:
        logger.warning(
            "PDF page %d unreadable, skipped: %s: %s", index + 1, type(exc).__name__, exc
        )
        return ""
    return clean_pdf_text(raw)


def clean_pdf_text(raw: str) -> str:
    """Rejoin extracted lines: undo hyphenation, merge wrapped lines, keep paragraphs and lists."""
    raw = normalize_newlines(raw).translate(_TRANSLATE)
    lines = [_SPACES.sub(" ", line).strip() for line in raw.split("\n")]
    longest = max((len(line) for line in lines), default=0)
    wide = longest * _WIDE_SHARE if longest >= _MIN_WRAP_WIDTH else float("inf")
    paragraphs: list[str] = []
    current = previous = ""
    for line in lines:
        if not line:
            paragraphs.append(current)
            current = previous = ""
            continue
        if not current:
            current = line
        elif previous[-1] == "-" and previous[-2:-1].isalpha():
            # "infor-" + "mation" is one word; "Jean-" + "Paul" keeps its hyphen.
            current = current[:-1] + line if line[0].islower() else current + line
        elif _LIST_ITEM.match(line):
            current += "\n" + line
        elif len(previous) >= wide or line[0].islower():
            current += " " + line
        else:
            # A short line followed by a capital: the end of a paragraph, or a heading.
            paragraphs.append(current)
            current = line
        previous = line
    paragraphs.append(current)
    return "\n\n".join(p for p in paragraphs if p)


def _metadata_title(reader: PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        raw = metadata.title if metadata is not None else None
    except _MALFORMED as exc:
        # A damaged info dictionary costs the title, not the document.
        logger.warning("PDF metadata ignored: %s: %s", type(exc).__name__, exc)
        return None
    if not isinstance(raw, str):
        return None
    title = " ".join(raw.split()).removeprefix("Microsoft Word - ")
    # Producers fill /Title with placeholders and file names; those say nothing to a reader.
    if title.lower() in _MEANINGLESS_TITLES or _FILE_NAME.search(title):
        return None
    return _first_line_title(title)


def _first_line_title(text: str) -> str | None:
    first = text.strip().split("\n", 1)[0].strip()
    if 0 < len(first) < _MAX_TITLE_CHARS and any(c.isalpha() for c in first):
        return first
    return None


def _outline_starts(reader: PdfReader) -> _PageStarts:
    """Map a 0-based page index to the heading paths of the bookmarks that start on it."""
    starts: _PageStarts = {}

    def walk(items: Sequence[object], parent: tuple[str, ...]) -> None:
        last = parent
        for item in items:
            if isinstance(item, list):
                walk(item, last)
            elif isinstance(item, Destination):
                title = " ".join(str(item.title or "").split())
                if not title:
                    continue
                last = (*parent, title)
                page = reader.get_destination_page_number(item)
                if page is not None and page >= 0:
                    starts.setdefault(page, []).append(last)

    # Bookmarks are a convenience: a broken outline must not cost the document.
    try:
        walk(reader.outline, ())
    except _OUTLINE_ERRORS as exc:
        logger.warning("PDF outline ignored: %s: %s", type(exc).__name__, exc)
        return {}
    return starts


def _page_paths(starts: _PageStarts, page_count: int) -> list[tuple[str, ...]]:
    """Give each page the bookmark starting on it, else the last one before it."""
    paths: list[tuple[str, ...]] = []
    carried: tuple[str, ...] = ()
    for index in range(page_count):
        here = starts.get(index, [])
        # A bookmark usually points at the top of its page, so the first one names the page.
        paths.append(here[0] if here else carried)
        if here:
            carried = here[-1]
    return paths
