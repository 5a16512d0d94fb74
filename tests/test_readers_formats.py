"""Readers on real files built at test time: structure kept, and every bad input refused clearly."""

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import docx
import pytest
from pypdf import PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from ingestion.errors import UnreadableDocumentError
from ingestion.readers import SUPPORTED_SUFFIXES, ReaderLimits, is_supported, read_document
from ingestion.readers.pdf import clean_pdf_text
from ingestion.readers.text import decode_text

_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# Page = (outline title, outline level, lines); lines are drawn one under another.
_Page = tuple[str, int, Sequence[str]]

HANDBOOK: list[_Page] = [
    (
        "Introduction",
        0,
        [
            "Introduction",
            "This handbook explains how the company works and what every new",
            "employee should know about holidays, equip-",
            "ment and the informa-",
            "tion security rules.",
            "Second paragraph starts here.",
        ],
    ),
    (
        "Holidays",
        1,
        [
            "Holidays",
            "Every employee gets twenty-eight days of paid leave per calendar",
            "year. Requests go through the HR portal.",
            "- Book early",
            "- Tell your team",
        ],
    ),
]


def make_pdf(pages: Sequence[_Page], title: str | None = None, font: str = "Helvetica") -> bytes:
    """A PDF with one outline entry per page and the given lines of text."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    if title is not None:
        pdf.setTitle(title)
    for number, (heading, level, lines) in enumerate(pages):
        key = f"page{number}"
        pdf.bookmarkPage(key)
        pdf.addOutlineEntry(heading, key, level=level)
        pdf.setFont(font, 11)
        for row, line in enumerate(lines):
            pdf.drawString(72, 800 - 14 * row, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def encrypt(data: bytes, user_password: str, algorithm: str = "RC4-128") -> bytes:
    """The PDF encrypted (AES needs the cryptography package, a dependency of ours)."""
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def make_docx(*, with_title: bool = True, core_title: str = "") -> bytes:
    """A DOCX with a title, nested headings, a list and a table between paragraphs."""
    document = docx.Document()
    if with_title:
        document.add_paragraph("Quarterly Report", style="Title")
    document.add_paragraph("Written before any heading.")
    document.add_heading("Overview", level=1)
    document.add_paragraph("Sales grew this quarter.")
    document.add_paragraph("first point", style="List Bullet")
    document.add_paragraph("second point", style="List Number")
    document.add_heading("Numbers", level=2)
    document.add_paragraph("Before the table.")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate(
        [["Name", "Qty", "Price"], ["Apple", "3", "1.20"], ["Pear", "5", "0.80"]]
    ):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("After the table.")
    document.add_heading("Appendix", level=1)
    document.add_paragraph("The end.")
    document.core_properties.title = core_title
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def refused(name: str, data: bytes, limits: ReaderLimits | None = None) -> str:
    """The reason read_document gives for refusing the file."""
    with pytest.raises(UnreadableDocumentError) as caught:
        read_document(name, data, limits)
    return str(caught.value)


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_pages_keep_order_headings_and_title() -> None:
    parsed = read_document("handbook.pdf", make_pdf(HANDBOOK, title="Employee Handbook"))

    assert parsed.title == "Employee Handbook"
    assert [s.page for s in parsed.sections] == [1, 2]
    assert [s.heading_path for s in parsed.sections] == [
        ("Introduction",),
        ("Introduction", "Holidays"),
    ]
    first, second = (s.text for s in parsed.sections)
    assert (
        "what every new employee should know about holidays, equipment and the information "
        "security rules." in first
    )
    assert first.index("Introduction") < first.index("handbook") < first.index("Second paragraph")
    assert "\n\nSecond paragraph starts here." in first
    assert "per calendar year. Requests" in second
    assert "- Book early\n- Tell your team" in second


def test_pdf_title_falls_back_to_first_line_then_stem() -> None:
    # reportlab writes the placeholder title "untitled" when none is set.
    assert read_document("h.pdf", make_pdf(HANDBOOK)).title == "Introduction"
    long_line = "A first line far too long to be a title " * 4
    assert read_document("notes_2024.pdf", make_pdf([("x", 0, [long_line])])).title == "notes_2024"


@pytest.mark.skipif(not _DEJAVU.exists(), reason="needs the DejaVu font for Cyrillic")
def test_pdf_cyrillic_text_is_dehyphenated() -> None:
    pdfmetrics.registerFont(TTFont("DejaVu", str(_DEJAVU)))
    lines = [
        "Отпуск",
        "Каждый сотрудник получает ежегодный оплачиваемый отпуск по",
        "заяв-",
        "лению.",
    ]
    parsed = read_document("отпуск.pdf", make_pdf([("Отпуск", 0, lines)], font="DejaVu"))
    assert "отпуск по заявлению." in parsed.sections[0].text
    assert parsed.sections[0].heading_path == ("Отпуск",)


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_pdf_with_empty_user_password_is_read(algorithm: str) -> None:
    # Locked only against printing or copying: readable, whatever the cipher.
    locked = encrypt(make_pdf(HANDBOOK), user_password="", algorithm=algorithm)
    parsed = read_document("locked.pdf", locked)
    assert "Book early" in parsed.sections[1].text


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_pdf_with_password_is_refused(algorithm: str) -> None:
    secret = encrypt(make_pdf(HANDBOOK), user_password="secret", algorithm=algorithm)
    assert refused("secret.pdf", secret) == "PDF is password-protected"


def test_pdf_without_text_is_refused() -> None:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    pdf.rect(100, 100, 200, 200, fill=1)
    pdf.showPage()
    pdf.save()
    assert "no extractable text (scanned image?)" in refused("scan.pdf", buffer.getvalue())


def test_corrupt_pdf_is_refused() -> None:
    assert refused("random.pdf", os.urandom(4000)) == "corrupt PDF: not a PDF file (no %PDF header)"


def test_truncated_pdf_is_refused() -> None:
    data = make_pdf(HANDBOOK)
    reason = refused("cut.pdf", data[: len(data) // 2])
    assert reason == "corrupt PDF: the file is truncated (no end-of-file marker)"


def test_clean_pdf_text_keeps_list_items_and_compound_names() -> None:
    raw = (
        "Steps to follow, in this order, before you leave on holiday:\n1. Ask\n2. Wait\nJean-\nPaul"
    )
    assert clean_pdf_text(raw) == (
        "Steps to follow, in this order, before you leave on holiday:\n1. Ask\n2. Wait\n\nJean-Paul"
    )


# --- DOCX ------------------------------------------------------------------------------------


def test_docx_structure_titles_headings_lists_and_tables() -> None:
    parsed = read_document("report.docx", make_docx())

    assert parsed.title == "Quarterly Report"
    assert [s.heading_path for s in parsed.sections] == [
        (),
        ("Overview",),
        ("Overview", "Numbers"),
        ("Appendix",),
    ]
    texts = [s.text for s in parsed.sections]
    assert texts[0] == "Written before any heading."
    assert texts[1] == "Sales grew this quarter.\n\n- first point\n- second point"
    table = "Name | Qty | Price\nApple | 3 | 1.20\nPear | 5 | 0.80"
    assert texts[2] == f"Before the table.\n\n{table}\n\nAfter the table."
    assert texts[3] == "The end."
    assert "Quarterly Report" not in "".join(texts)


def test_docx_title_fallbacks() -> None:
    core = read_document("r.docx", make_docx(with_title=False, core_title="Core Title"))
    assert core.title == "Core Title"
    assert read_document("r.docx", make_docx(with_title=False)).title == "Overview"


def test_docx_zip_bomb_is_refused() -> None:
    # A few kilobytes that inflate to 8 MB: a small limit stands in for a real multi-GB bomb.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w:document>" + b" " * 8 * 1024 * 1024)
    bomb = buffer.getvalue()

    reason = refused("bomb.docx", bomb, ReaderLimits(max_unzipped_bytes=4 * 1024 * 1024))
    assert reason == "DOCX would unpack to 8.0 MB: refused as a possible zip bomb"
    reason = refused("bomb.docx", bomb, ReaderLimits(max_zip_ratio=100.0))
    assert "times its size: refused as a possible zip bomb" in reason


def test_docx_that_is_not_a_zip_is_refused() -> None:
    assert (
        refused("fake.docx", b"This is plain text, not a zip.") == "corrupt DOCX: not a zip archive"
    )


def test_old_word_doc_renamed_to_docx_is_refused() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)
    assert ".doc" in refused("old.docx", ole)


def test_zip_without_word_document_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert "no word/document.xml" in refused("sheet.docx", buffer.getvalue())


def test_docx_with_only_a_title_has_no_text() -> None:
    document = docx.Document()
    document.add_paragraph("Only a title", style="Title")
    buffer = io.BytesIO()
    document.save(buffer)
    assert "no text found" in refused("title.docx", buffer.getvalue())


# --- Text and encodings ----------------------------------------------------------------------

RUSSIAN = "\n".join(
    ["Отпуск", "", "Каждый сотрудник получает ежегодный оплачиваемый отпуск. Съешь ещё булок."]
)


@pytest.mark.parametrize("encoding", ["cp1251", "koi8-r", "utf-16", "utf-8-sig"])
def test_russian_text_decodes_in_legacy_encodings_and_with_bom(encoding: str) -> None:
    parsed = read_document("отпуск.txt", RUSSIAN.encode(encoding))
    assert parsed.title == "Отпуск"
    assert parsed.sections[0].text == RUSSIAN


def test_latin1_text_decodes() -> None:
    text = "Le garçon est allé à l'école. Il a mangé une crème brûlée à l'hôtel."
    assert decode_text(text.encode("latin-1")) == text


def test_plain_text_paragraphs_line_endings_and_title() -> None:
    parsed = read_document(
        "notes.TXT", b"  Meeting notes  \r\n\r\n\r\nFirst line\r\nsecond\r\n\r\nEnd"
    )
    assert parsed.title == "Meeting notes"
    assert parsed.sections[0].heading_path == ()
    assert parsed.sections[0].text == "  Meeting notes\n\nFirst line\nsecond\n\nEnd"
    sentence = read_document("my notes.txt", b"It starts with a sentence.\nAnd goes on.")
    assert sentence.title == "my notes"


def test_random_bytes_as_text_are_refused() -> None:
    assert "cannot detect the text encoding" in refused("noise.txt", os.urandom(2000))


def test_control_characters_are_refused_as_binary() -> None:
    assert "cannot detect the text encoding" in refused("bin.txt", bytes(range(1, 32)) * 20)


# --- Dispatcher ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"  \n\t \r\n", "   \n".encode("utf-16")])
def test_empty_files_are_refused(data: bytes) -> None:
    assert refused("blank.txt", data) == "empty file"


def test_unsupported_type_is_refused_with_the_supported_list() -> None:
    reason = refused("photo.XYZ", b"data")
    assert reason.startswith("unsupported file type '.xyz' (supported: .pdf, .docx")
    assert "(no extension)" in refused("README", b"data")
    assert is_supported("REPORT.PDF")
    assert not is_supported("report.doc")
    assert set(SUPPORTED_SUFFIXES) >= {".pdf", ".docx", ".html", ".md", ".txt"}


def test_file_over_the_size_limit_is_refused() -> None:
    reason = refused("big.txt", b"a" * (1536 * 1024), ReaderLimits(max_file_bytes=1024 * 1024))
    assert reason == "file is 1.5 MB, over the 1.0 MB limit (INGEST_MAX_FILE_MB)"


def test_parser_crash_becomes_a_short_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(name: str, data: bytes, limits: object = None) -> None:
        raise ValueError("bad xref " + "x" * 500)

    monkeypatch.setattr("ingestion.readers.pdf.read_pdf", crash)
    reason = refused("a.pdf", b"%PDF-1.4 whatever")
    assert reason.startswith("cannot parse PDF: ValueError: bad xref x")
    assert len(reason) <= 200


@pytest.mark.parametrize("error", [MemoryError, KeyboardInterrupt])
def test_fatal_errors_are_not_swallowed(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    def crash(name: str, data: bytes, limits: object = None) -> None:
        raise error

    monkeypatch.setattr("ingestion.readers.pdf.read_pdf", crash)
    with pytest.raises(error):
        read_document("a.pdf", b"%PDF-1.4 whatever")


def test_markdown_and_html_are_dispatched() -> None:
    pytest.importorskip("ingestion.readers.markdown")
    pytest.importorskip("ingestion.readers.html")
    source = "\n".join(["# Руководство", "", "Привет, мир."])
    markdown = read_document("guide.md", source.encode("cp1251"))
    assert "Привет, мир." in " ".join(s.text for s in markdown.sections)
    html = read_document("page.htm", b"<html><body><h1>Page</h1><p>Hello there.</p></body></html>")
    assert "Hello there." in " ".join(s.text for s in html.sections)
