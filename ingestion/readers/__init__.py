"""Readers: any supported file's bytes into a ParsedDocument, or a reason it cannot be read.

Format readers with heavy parser libraries are imported when first needed.
"""

from pathlib import PureWindowsPath

from ingestion.errors import UnreadableDocumentError
from ingestion.readers.base import ParsedDocument, ReaderLimits, Section
from ingestion.readers.text import decode_text, read_text

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ParsedDocument",
    "ReaderLimits",
    "Section",
    "is_supported",
    "read_document",
    "too_large",
]

SUPPORTED_SUFFIXES = (".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt", ".text")
_KINDS = {
    ".pdf": "PDF",
    ".docx": "DOCX",
    ".html": "HTML",
    ".htm": "HTML",
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".txt": "text",
    ".text": "text",
}
_MAX_REASON_CHARS = 200
_MB = 1024 * 1024


def is_supported(name: str) -> bool:
    """True when the file name has a suffix a reader exists for (case-insensitive)."""
    return _suffix(name) in SUPPORTED_SUFFIXES


def read_document(name: str, data: bytes, limits: ReaderLimits | None = None) -> ParsedDocument:
    """Parse a file's bytes by suffix; UnreadableDocumentError carries a reason for the user."""
    limits = limits or ReaderLimits()
    suffix = _suffix(name)
    if suffix not in SUPPORTED_SUFFIXES:
        found = f"'{suffix}'" if suffix else "(no extension)"
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise UnreadableDocumentError(f"unsupported file type {found} (supported: {supported})")
    if len(data) > limits.max_file_bytes:
        raise too_large(len(data), limits)
    if not data.strip():
        raise UnreadableDocumentError("empty file")
    kind = _KINDS[suffix]
    try:
        document = _parse(suffix, name, data, limits)
    except (UnreadableDocumentError, MemoryError):
        raise
    except Exception as exc:
        # Parser libraries fail in many ways on malformed input; the user needs one short reason.
        raise UnreadableDocumentError(_reason(kind, exc)) from exc
    if document.is_empty():
        raise UnreadableDocumentError(f"no text found in the {kind} file")
    check_chars(sum(len(s.text) for s in document.sections), limits)
    return document


def check_chars(chars: int, limits: ReaderLimits, *, at_least: bool = False) -> None:
    """Refuse a document with more text than the limit (at_least: counting stopped early)."""
    if chars > limits.max_chars:
        amount = f"more than {limits.max_chars:,}" if at_least else f"{chars:,}"
        raise UnreadableDocumentError(
            f"document has {amount} characters of text, over the {limits.max_chars:,} limit "
            "(INGEST_MAX_CHARS): split it, or raise the limit"
        )


def too_large(size: int, limits: ReaderLimits) -> UnreadableDocumentError:
    """The error for a file over the size limit (checked before reading it, where possible)."""
    return UnreadableDocumentError(
        f"file is {size / _MB:.1f} MB, over the {limits.max_file_bytes / _MB:.1f} MB limit"
        " (INGEST_MAX_FILE_MB)"
    )


def _parse(suffix: str, name: str, data: bytes, limits: ReaderLimits) -> ParsedDocument:
    if suffix == ".pdf":
        from ingestion.readers.pdf import read_pdf

        return read_pdf(name, data, limits)
    if suffix == ".docx":
        from ingestion.readers.docx import read_docx

        return read_docx(name, data, limits)
    if suffix in (".html", ".htm"):
        from ingestion.readers.html import html_text_chars, read_html

        # A streaming pass first: a page with far too much text is refused before the full
        # parse, which holds several copies of it (measured: 1.6 GB for 49 MB on one line).
        check_chars(html_text_chars(data, limits.max_chars), limits, at_least=True)
        return read_html(name, data)
    text = decode_text(data)
    check_chars(len(text), limits)
    # Whitespace in UTF-16/32 is not caught by the byte-level check.
    if not text.strip():
        raise UnreadableDocumentError("empty file")
    if suffix in (".md", ".markdown"):
        from ingestion.readers.markdown import read_markdown

        return read_markdown(name, text)
    return read_text(name, text)


def _suffix(name: str) -> str:
    return PureWindowsPath(name.strip()).suffix.lower()


def _reason(kind: str, exc: Exception) -> str:
    detail = " ".join(str(exc).split())
    reason = f"cannot parse {kind}: {type(exc).__name__}"
    if detail:
        reason += f": {detail}"
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1].rstrip() + "…"
    return reason
