"""DOCX reader: zip-bomb checks first, then the body in document order with python-docx."""

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docx
from docx.document import Document
from docx.table import Table
from docx.text.paragraph import Paragraph

from ingestion.errors import UnreadableDocumentError
from ingestion.readers.base import ParsedDocument, ReaderLimits, Section
from ingestion.readers.text import fallback_title

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAIN_PART = "word/document.xml"
_WORD_CONTENT_TYPE = re.compile(rb"wordprocessingml\.(document|template)\.main\+xml")
# Small archives cannot hurt whatever their ratio, and tiny repetitive XML parts compress well.
_RATIO_FLOOR_BYTES = 1024 * 1024
_HEADING_STYLE = re.compile(r"heading\s*([1-9])$", re.IGNORECASE)


def read_docx(name: str, data: bytes, limits: ReaderLimits) -> ParsedDocument:
    """Parse a DOCX: Title style as title, Heading N styles as paths, tables as "a | b" rows."""
    check_docx_archive(data, limits)
    document = docx.Document(io.BytesIO(data))
    builder = _Builder()
    for block in _iter_blocks(document):
        if isinstance(block, Table):
            builder.add_block(_table_text(block), is_list=False)
        else:
            builder.add_paragraph(block)
    sections = builder.finish()
    title = (
        builder.title
        or " ".join((document.core_properties.title or "").split())
        or builder.first_heading
        or fallback_title(name)
    )
    return ParsedDocument(title=title, sections=sections)


def check_docx_archive(data: bytes, limits: ReaderLimits) -> None:
    """Refuse what is not a Word zip package, or would inflate past the limits (zip bomb)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        if data.startswith(_OLE_MAGIC):
            raise UnreadableDocumentError(
                "old Word .doc or password-protected file: save it as an unprotected .docx"
            ) from exc
        raise UnreadableDocumentError("corrupt DOCX: not a zip archive") from exc
    with archive:
        infos = archive.infolist()
        # The sizes come from the zip directory, before anything is inflated; zipfile stops a
        # member at its declared size, so an archive cannot lie its way past this check.
        unpacked = sum(info.file_size for info in infos)
        packed = sum(info.compress_size for info in infos)
        if unpacked > limits.max_unzipped_bytes:
            raise UnreadableDocumentError(
                f"DOCX would unpack to {_size(unpacked)}: refused as a possible zip bomb"
            )
        if unpacked > _RATIO_FLOOR_BYTES and unpacked > packed * limits.max_zip_ratio:
            raise UnreadableDocumentError(
                f"DOCX would unpack to {unpacked / max(packed, 1):.0f} times its size: "
                "refused as a possible zip bomb"
            )
        if not _is_word_package(archive):
            raise UnreadableDocumentError(
                "not a Word document: the archive has no word/document.xml"
            )


def _is_word_package(archive: zipfile.ZipFile) -> bool:
    names = set(archive.namelist())
    if _MAIN_PART in names:
        return True
    # Some generators name the main part differently; the content types still declare it.
    if "[Content_Types].xml" not in names:
        return False
    return _WORD_CONTENT_TYPE.search(archive.read("[Content_Types].xml")) is not None


def _size(count: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _iter_blocks(document: Document) -> Iterator[Paragraph | Table]:
    """Paragraphs and tables of the body in document order, including content controls."""
    yield from _blocks_in(document.element.body, document)


def _blocks_in(container: Any, document: Document) -> Iterator[Paragraph | Table]:
    for element in container.iterchildren():
        if element.tag == f"{_W}p":
            yield Paragraph(element, document)
        elif element.tag == f"{_W}tbl":
            yield Table(element, document)
        elif element.tag == f"{_W}sdt":
            # A content control (form field, cover-page block) wraps ordinary paragraphs.
            content = element.find(f"{_W}sdtContent")
            if content is not None:
                yield from _blocks_in(content, document)


def _table_text(table: Table) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A cell spanning columns is repeated once per column; show it once.
            if previous is not None and cell._tc is previous._tc:
                continue
            previous = cell
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _style_name(paragraph: Paragraph) -> str:
    style = paragraph.style
    return str(style.name) if style is not None and style.name else ""


def _is_list_item(paragraph: Paragraph, style_name: str) -> bool:
    if style_name.lower().startswith("list"):
        return True
    properties = paragraph._p.pPr
    return properties is not None and properties.numPr is not None


@dataclass
class _Builder:
    """Collects blocks under the current heading path and cuts a section at each heading."""

    title: str = ""
    first_heading: str = ""
    sections: list[Section] = field(default_factory=list)
    path: list[tuple[int, str]] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    last_was_list: bool = False

    def add_paragraph(self, paragraph: Paragraph) -> None:
        # Keep manual line breaks (addresses, verse); collapse other whitespace.
        lines = (" ".join(line.split()) for line in paragraph.text.split("\n"))
        text = "\n".join(line for line in lines if line)
        if not text:
            return
        style_name = _style_name(paragraph)
        heading = _HEADING_STYLE.match(style_name)
        if style_name == "Title" and not self.title:
            self.title = text
        elif heading:
            self.add_heading(int(heading.group(1)), text)
        elif _is_list_item(paragraph, style_name):
            self.add_block(f"- {text}", is_list=True)
        else:
            self.add_block(text, is_list=False)

    def add_heading(self, level: int, text: str) -> None:
        self.end_section()
        self.first_heading = self.first_heading or text
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))

    def add_block(self, text: str, *, is_list: bool) -> None:
        if not text:
            return
        # Consecutive list items stay one block, one item a line.
        if is_list and self.last_was_list:
            self.blocks[-1] += "\n" + text
        else:
            self.blocks.append(text)
        self.last_was_list = is_list

    def end_section(self) -> None:
        if self.blocks:
            path = tuple(text for _, text in self.path)
            self.sections.append(Section(heading_path=path, text="\n\n".join(self.blocks)))
        self.blocks = []
        self.last_was_list = False

    def finish(self) -> list[Section]:
        self.end_section()
        return self.sections
