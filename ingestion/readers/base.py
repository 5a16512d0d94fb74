"""What every reader returns: a title and sections, each under its heading path."""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path; paragraphs separated by blank lines."""

    heading_path: tuple[str, ...]
    text: str
    page: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document's title and its sections in reading order."""

    title: str
    sections: list[Section] = field(default_factory=list)
    # The document's own address when it names one (an HTML canonical link), for citations.
    url: str | None = None

    def is_empty(self) -> bool:
        """True when no section has any visible text."""
        return not any(s.text.strip() for s in self.sections)


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Guards against oversized and malicious files."""

    max_file_bytes: int = 50 * 1024 * 1024
    # A DOCX is a zip: refuse one that would inflate beyond this, or by more than the ratio.
    max_unzipped_bytes: int = 200 * 1024 * 1024
    max_zip_ratio: float = 100.0
    # Per document: a PDF's pages, and the characters of text any reader returns. Past these a
    # document is refused with a reason naming the limit (INGEST_MAX_PAGES, INGEST_MAX_CHARS).
    max_pages: int = 3000
    max_chars: int = 10_000_000
