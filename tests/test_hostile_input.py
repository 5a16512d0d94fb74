"""Hostile but allowed input: per-document limits (pages, characters, chunks) refuse with a
reason naming the limit, long lines are chunked at bounded cost, and paths that cannot be read
(an unreadable folder, broken or looping links, a newline in a name) are reported by name."""

import asyncio
import errno
import os
from pathlib import Path

import pytest

from bench.hostile import many_page_pdf, one_line_html
from ingestion.chunking import chunk_document
from ingestion.errors import UnreadableDocumentError
from ingestion.pipeline import Ingestor, SourceFile, printable, scan
from ingestion.readers import ReaderLimits, read_document
from ingestion.readers.base import ParsedDocument, Section
from ingestion.settings import IngestionSettings
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedders, SparseEmbedder
from tests.crash_child import WordEmbedder


def test_pdf_over_the_page_limit_is_refused_before_reading_its_pages(tmp_path: Path) -> None:
    pdf = many_page_pdf(tmp_path / "pages.pdf", 5000).read_bytes()
    with pytest.raises(UnreadableDocumentError, match=r"5,000 pages.*INGEST_MAX_PAGES"):
        read_document("pages.pdf", pdf, ReaderLimits(max_pages=3000))
    # Under the limit the same file reads, one section per page.
    small = many_page_pdf(tmp_path / "few.pdf", 3).read_bytes()
    assert [s.page for s in read_document("few.pdf", small).sections] == [1, 2, 3]


def test_html_with_too_much_text_is_refused_by_the_streaming_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingestion.readers.html as html_reader

    def no_full_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the full parse holds several copies of the page")

    monkeypatch.setattr(html_reader, "BeautifulSoup", no_full_parse)
    html = one_line_html(tmp_path / "line.html", 3).read_bytes()
    with pytest.raises(UnreadableDocumentError, match="INGEST_MAX_CHARS"):
        read_document("line.html", html, ReaderLimits(max_chars=1_000_000))
    # Scripts and styles do not count: the reader drops them.
    page = b"<html><head><script>" + b"x" * 2_000_000 + b"</script></head><body><p>Hi</p>"
    assert html_reader.html_text_chars(page, 1_000_000) == 2


def test_text_over_the_character_limit_is_refused(tmp_path: Path) -> None:
    html = one_line_html(tmp_path / "line.html", 2).read_bytes()
    with pytest.raises(UnreadableDocumentError, match=r"characters.*INGEST_MAX_CHARS"):
        read_document("line.html", html, ReaderLimits(max_chars=1_000_000))
    text = b"word " * 300_000
    with pytest.raises(UnreadableDocumentError, match="INGEST_MAX_CHARS"):
        read_document("notes.txt", text, ReaderLimits(max_chars=1_000_000))


def test_a_book_length_line_is_chunked_with_bounded_tokenizer_work() -> None:
    calls: list[int] = []

    def count(text: str) -> int:
        calls.append(len(text))
        return len(text.split())

    line = "lorem ipsum dolor sit amet " * 40_000  # 1 MB, one paragraph, no sentence end
    doc = ParsedDocument("Line", [Section((), line)])
    chunks = chunk_document(doc, count, max_tokens=256, overlap_tokens=0)
    # Before: the whole line counted at once, then every word on its own (200,000 calls).
    assert len(calls) < 3 * len(chunks)
    assert max(calls) <= 2 * 256 * 2
    assert all(count(c.text) <= 256 for c in chunks)
    assert "".join("".join(c.text.split()) for c in chunks) == "".join(line.split())


def _ingestor(store: EdgeStore, **settings: int) -> Ingestor:
    return Ingestor(
        store,
        DenseEmbedders.of(WordEmbedder()),
        SparseEmbedder(),
        IngestionSettings(chunk_tokens=32, chunk_overlap_tokens=0, **settings),
    )


async def test_a_document_over_the_chunk_limit_is_reported_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    store = EdgeStore(tmp_path / "store")
    try:
        big = SourceFile("big.txt", "big.txt", data=("Sentence of text. " * 2000).encode())
        small = SourceFile("small.txt", "small.txt", data=b"A short note about parking.")
        report = await _ingestor(store, max_chunks=50).ingest([big, small], "docs")
        by_id = {f.doc_id: f for f in report.files}
        assert by_id["big.txt"].status == "failed"
        assert "over the 50 limit (INGEST_MAX_CHUNKS)" in by_id["big.txt"].reason
        assert by_id["small.txt"].status == "added"
    finally:
        await store.close()


async def test_documents_are_read_one_at_a_time(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "store")
    try:
        ingestor = _ingestor(store)
        inside = 0
        most = 0
        chunk = ingestor.chunk

        def counting(*args: object, **kwargs: object) -> object:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            try:
                return chunk(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                inside -= 1

        ingestor.chunk = counting  # type: ignore[method-assign,assignment]
        uploads = [
            [SourceFile(f"{n}-{i}.txt", "x", data=f"Note {n} {i}. ".encode() * 400)]
            for n in range(2)
            for i in range(3)
        ]
        await ingestor.ensure_collection("docs")
        reports = await asyncio.gather(*(ingestor.ingest(u, "docs") for u in uploads))
        assert all(r.count("added") == 1 for r in reports)
        assert most == 1
    finally:
        await store.close()


def test_unreadable_paths_are_reported_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "docs"
    (root / "team").mkdir(parents=True)
    (root / "secret").mkdir()
    (root / "team" / "guide.md").write_text("# Guide\n\nText.", encoding="utf-8")
    (root / "dangling.md").symlink_to(root / "gone.md")
    (root / "loop.md").symlink_to(root / "loop.md")
    (root / "team" / "up").symlink_to(root)
    (root / "line\nbreak.md").write_text("Text.", encoding="utf-8")
    # Root reads any folder: the refusal a normal user gets is simulated where os.walk sees it.
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path) == root / "secret":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, problems = scan([root, tmp_path / "missing.md"])

    assert sorted(f.doc_id for f in files) == ["line\nbreak.md", "team/guide.md"]
    reasons = {p.doc_id: p.reason for p in problems}
    assert reasons["secret"] == "cannot read folder: Permission denied"
    assert reasons["dangling.md"].startswith("broken symbolic link")
    assert reasons["loop.md"] == "symbolic link loop"
    assert reasons["team/up"].startswith("symbolic link loop")
    assert reasons[str(tmp_path / "missing.md")].startswith("not found")
    assert all(p.status == "failed" for p in problems)
    assert printable("line\nbreak.md") == "line\\nbreak.md"
