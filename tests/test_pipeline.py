"""The ingestion pipeline and hybrid search on the real embedder and a real Qdrant Edge store.

Only the store is wrapped, to watch the order of writes or to inject failures."""

import hashlib
import io
import random
import zipfile
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path

import pytest

from ingestion.pipeline import FileReport, Ingestor, IngestReport, discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.errors import CollectionNotFoundError
from kb.schema import (
    Candidate,
    Chunk,
    ChunkVectors,
    CollectionSpec,
    DocumentInfo,
    SparseVector,
)
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from kb.store import VectorStore

IngestorFactory = Callable[..., Ingestor]
FileWriter = Callable[[Path, dict[str, str | bytes]], Path]

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

PARAGRAPH = "The nightly job {i} copies the database to the backup server and checks the result."

DOCS: dict[str, str | bytes] = {
    "holidays.md": "# Holidays\n\nEvery employee gets twenty-eight calendar days of paid annual "
    "leave. Requests are approved by your manager in the HR portal two weeks ahead.",
    "it/vpn.md": "# Remote access\n\nTo work from home, connect to the office network with the "
    "WireGuard VPN client. The IT helpdesk issues the configuration file.",
    "finance/expenses.md": "# Expense reports\n\nBusiness travel costs are reimbursed within "
    "thirty days. Attach receipts for taxis, hotels and meals to the expense claim.",
    "printer.txt": "Printing\n\nThe printer on the third floor prints double-sided by default. "
    "Replace the toner cartridge from the supply cupboard.",
    "backups.html": "<html><head><title>Backups</title>"
    '<link rel="canonical" href="https://wiki.example.com/backups"></head><body><h1>Backups</h1>'
    + "".join(f"<p>{PARAGRAPH.format(i=i)}</p>" for i in range(8))
    + "</body></html>",
}
GOOD_IDS = sorted(str(name) for name in DOCS)


class SpyStore:
    """A VectorStore around a real one: records writes, and fails on demand."""

    def __init__(
        self,
        inner: VectorStore,
        fail_upsert: Sequence[str] = (),
        partial_upsert: dict[str, int] | None = None,
    ) -> None:
        self.inner = inner
        self.fail_upsert = set(fail_upsert)
        self.partial_upsert = partial_upsert or {}
        # ("upsert", doc_id, content_hash) and ("delete", doc_id, None), in call order.
        self.events: list[tuple[str, str, str | None]] = []
        # The point ids last upserted, and those a delete kept, per document.
        self.upserted: dict[str, set[str]] = {}
        self.kept: dict[str, set[str]] = {}
        # What the store held of a document at the moment its old versions were deleted.
        self.versions_at_delete: dict[str, list[DocumentInfo]] = {}

    async def ensure_collection(self, spec: CollectionSpec) -> CollectionSpec:
        return await self.inner.ensure_collection(spec)

    async def get_collection(self, name: str) -> CollectionSpec | None:
        return await self.inner.get_collection(name)

    async def list_collections(self) -> list[str]:
        return await self.inner.list_collections()

    async def update_collection(self, spec: CollectionSpec) -> None:
        await self.inner.update_collection(spec)

    async def upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        for doc_id in dict.fromkeys(p.chunk.doc_id for p in points):
            self.events.append(("upsert", doc_id, points[0].chunk.content_hash))
            self.upserted[doc_id] = {p.chunk.point_id for p in points if p.chunk.doc_id == doc_id}
            if doc_id in self.fail_upsert:
                raise RuntimeError("disk full")
            if doc_id in self.partial_upsert:
                await self.inner.upsert(collection, points[: self.partial_upsert[doc_id]])
                raise RuntimeError("connection lost")
        await self.inner.upsert(collection, points)

    async def delete_document(
        self, collection: str, doc_id: str, keep: Collection[str] | None = None
    ) -> int:
        self.events.append(("delete", doc_id, None))
        self.kept[doc_id] = set(keep or ())
        self.versions_at_delete[doc_id] = await self.inner.document_versions(collection, doc_id)
        return await self.inner.delete_document(collection, doc_id, keep)

    async def document_versions(self, collection: str, doc_id: str) -> list[DocumentInfo]:
        return await self.inner.document_versions(collection, doc_id)

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        return await self.inner.list_documents(collection)

    async def candidates(
        self,
        collection: str,
        dense: Sequence[float],
        sparse: SparseVector,
        limit: int,
        doc_ids: Sequence[str] | None = None,
    ) -> list[Candidate]:
        return await self.inner.candidates(collection, dense, sparse, limit, doc_ids)

    async def fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        return await self.inner.fetch(collection, point_ids)

    async def close(self) -> None:
        await self.inner.close()


def statuses(report: IngestReport) -> dict[str, str]:
    return {f.doc_id: f.status for f in report.files}


def by_id(report: IngestReport) -> dict[str, FileReport]:
    return {f.doc_id: f for f in report.files}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def docs(tmp_path: Path, write_files: FileWriter) -> Path:
    return write_files(tmp_path / "docs", dict(DOCS))


@pytest.fixture
def searcher(
    edge_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> HybridSearcher:
    return HybridSearcher(
        edge_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
    )


class EmbedSpy:
    """Counts calls to the dense embedder's passage encoding."""

    def __init__(self, embedder: DenseEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = embedder.embed_passages

        def counting(texts: Sequence[str]) -> list[list[float]]:
            self.calls += 1
            return original(texts)

        monkeypatch.setattr(embedder, "embed_passages", counting)


# --- discovery -------------------------------------------------------------------------------


async def test_discover_ids_are_relative_paths_and_hidden_files_are_skipped(
    tmp_path: Path, write_files: FileWriter
) -> None:
    root = write_files(
        tmp_path / "kb",
        {
            "top.md": "x",
            "sub/x.md": "x",
            "sub/deeper/y.txt": "x",
            ".hidden.md": "x",
            ".git/config.md": "x",
            "sub/.draft.md": "x",
        },
    )
    found = discover([root])
    assert sorted(f.doc_id for f in found) == ["sub/deeper/y.txt", "sub/x.md", "top.md"]
    nested = next(f for f in found if f.doc_id == "sub/x.md")
    assert nested.source == str((root / "sub" / "x.md").resolve())

    [single] = discover([root / "sub" / "x.md"])
    assert single.doc_id == "x.md"
    assert single.read() == b"x"


# --- idempotency and replacement -------------------------------------------------------------


async def test_second_run_is_unchanged_and_embeds_nothing(
    tmp_path: Path,
    make_ingestor: IngestorFactory,
    docs: Path,
    dense_embedder: DenseEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first_store = EdgeStore(tmp_path / "persistent")
    try:
        first = await make_ingestor(first_store).ingest(discover([docs]), "docs")
        stored = await first_store.list_documents("docs")
    finally:
        await first_store.close()

    assert statuses(first) == dict.fromkeys(GOOD_IDS, "added")
    assert by_id(first)["backups.html"].chunks > 1
    assert first.chunks_written == sum(f.chunks for f in first.files)
    assert [d.doc_id for d in stored] == GOOD_IDS
    assert all(d.complete for d in stored)
    backups = next(d for d in stored if d.doc_id == "backups.html")
    assert backups.source == "https://wiki.example.com/backups"
    assert backups.content_hash == sha256(docs / "backups.html")

    # The second run is a later process: the store is opened again from disk.
    spy = EmbedSpy(dense_embedder, monkeypatch)
    store = SpyStore(EdgeStore(tmp_path / "persistent"))
    try:
        second = await make_ingestor(store).ingest(discover([docs]), "docs")
        assert await store.list_documents("docs") == stored
    finally:
        await store.close()

    assert statuses(second) == dict.fromkeys(GOOD_IDS, "unchanged")
    assert second.summary()["chunks_written"] == 0
    assert spy.calls == 0
    assert store.events == []


async def test_changed_file_is_replaced_without_a_gap(
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
    docs: Path,
    searcher: HybridSearcher,
) -> None:
    await make_ingestor(edge_store).ingest(discover([docs]), "docs")
    path = docs / "holidays.md"
    old_hash = sha256(path)
    path.write_text(
        "# Holidays\n\nFrom next year the company adds a sabbatical: after five years every "
        "employee may take three extra months of unpaid leave.",
        encoding="utf-8",
    )
    new_hash = sha256(path)

    store = SpyStore(edge_store)
    report = await make_ingestor(store).ingest(discover([docs]), "docs")

    assert statuses(report) == {
        **dict.fromkeys(GOOD_IDS, "unchanged"),
        "holidays.md": "replaced",
    }
    upsert = store.events.index(("upsert", "holidays.md", new_hash))
    delete = store.events.index(("delete", "holidays.md", None))
    assert upsert < delete
    assert [e for e in store.events if e[0] == "delete"] == [("delete", "holidays.md", None)]
    assert store.kept["holidays.md"] == store.upserted["holidays.md"]
    # When the old version was deleted, the new one was already complete in the store.
    at_delete = {v.content_hash: v for v in store.versions_at_delete["holidays.md"]}
    assert set(at_delete) == {old_hash, new_hash}
    assert at_delete[new_hash].complete

    [holidays] = [d for d in await edge_store.list_documents("docs") if d.doc_id == "holidays.md"]
    assert holidays.content_hash == new_hash
    assert holidays.complete
    hits = await searcher.search("Can I take a sabbatical after five years?", ["docs"], limit=20)
    assert hits[0].chunk.doc_id == "holidays.md"
    assert "sabbatical" in hits[0].chunk.text
    assert not any("twenty-eight" in h.chunk.text for h in hits)


async def test_reingest_completes_an_interrupted_write(
    edge_store: EdgeStore, make_ingestor: IngestorFactory, docs: Path
) -> None:
    # The write of backups.html dies after two of its chunks reached the store.
    crashing = SpyStore(edge_store, partial_upsert={"backups.html": 2})
    first = await make_ingestor(crashing).ingest(discover([docs]), "docs")
    assert by_id(first)["backups.html"].status == "failed"
    assert by_id(first)["backups.html"].reason == "store error: connection lost"
    [partial] = await edge_store.document_versions("docs", "backups.html")
    assert partial.stored_chunks == 2
    assert not partial.complete

    again = await make_ingestor(edge_store).ingest(discover([docs]), "docs")

    assert statuses(again) == {**dict.fromkeys(GOOD_IDS, "unchanged"), "backups.html": "replaced"}
    [whole] = await edge_store.document_versions("docs", "backups.html")
    assert whole.complete
    assert whole.stored_chunks == whole.chunk_count == by_id(again)["backups.html"].chunks > 2
    third = await make_ingestor(edge_store).ingest(discover([docs]), "docs")
    assert statuses(third) == dict.fromkeys(GOOD_IDS, "unchanged")


async def test_forced_rechunk_of_the_same_version_leaves_no_stale_chunks(
    edge_store: EdgeStore, make_ingestor: IngestorFactory, docs: Path
) -> None:
    small = await make_ingestor(edge_store, chunk_tokens=32, chunk_overlap_tokens=0).ingest(
        discover([docs / "backups.html"]), "docs"
    )
    large = await make_ingestor(edge_store, chunk_tokens=256).ingest(
        discover([docs / "backups.html"]), "docs", force=True
    )

    assert by_id(large)["backups.html"].status == "replaced"
    assert by_id(large)["backups.html"].chunks < by_id(small)["backups.html"].chunks
    [version] = await edge_store.document_versions("docs", "backups.html")
    assert version.stored_chunks == version.chunk_count == by_id(large)["backups.html"].chunks


async def test_delete_removes_a_document(
    edge_store: EdgeStore, make_ingestor: IngestorFactory, docs: Path, searcher: HybridSearcher
) -> None:
    ingestor = make_ingestor(edge_store)
    report = await ingestor.ingest(discover([docs]), "docs")

    removed = await ingestor.delete("docs", "it/vpn.md")

    assert removed == by_id(report)["it/vpn.md"].chunks
    assert [d.doc_id for d in await edge_store.list_documents("docs")] == [
        i for i in GOOD_IDS if i != "it/vpn.md"
    ]
    assert await searcher.search("VPN", ["docs"], doc_ids=["it/vpn.md"]) == []
    assert await ingestor.delete("docs", "it/vpn.md") == 0


# --- bad input and store failures --------------------------------------------------------------


def zip_bomb() -> bytes:
    """A few kilobytes that inflate to 8 MB (a small limit stands in for a real bomb)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w:document>" + b" " * 8 * 1024 * 1024)
    return buffer.getvalue()


async def test_bad_files_fail_with_reasons_and_good_ones_go_in(
    edge_store: EdgeStore, make_ingestor: IngestorFactory, tmp_path: Path, write_files: FileWriter
) -> None:
    bad: dict[str, str | bytes] = {
        "corrupt.pdf": bytes(range(256)) * 16,
        "empty.txt": b"",
        "photo.xyz": b"not a document",
        "noise.txt": random.Random(7).randbytes(3000),
        "big.txt": "A sentence that repeats. " * 12_000,
        "bomb.docx": zip_bomb(),
    }
    good: dict[str, str | bytes] = {
        "ok.md": "# Fine\n\nThis one is fine.",
        "ok.txt": "Plain notes about the canteen menu.",
        "ok.html": "<html><body><p>Opening hours are nine to five.</p></body></html>",
    }
    folder = write_files(tmp_path / "mixed", {**bad, **good})
    ingestor = make_ingestor(edge_store, max_file_mb=0.1, max_unzipped_mb=4)

    report = await ingestor.ingest(discover([folder]), "docs")

    files = by_id(report)
    assert {name: files[name].status for name in good} == dict.fromkeys(good, "added")
    assert {name: files[name].status for name in bad} == dict.fromkeys(bad, "failed")
    reasons = {name: files[name].reason for name in bad}
    assert reasons["corrupt.pdf"] == "corrupt PDF: not a PDF file (no %PDF header)"
    assert reasons["empty.txt"] == "empty file"
    assert reasons["photo.xyz"].startswith("unsupported file type '.xyz'")
    assert reasons["noise.txt"].startswith("cannot detect the text encoding")
    assert reasons["big.txt"] == "file is 0.3 MB, over the 0.1 MB limit (INGEST_MAX_FILE_MB)"
    assert reasons["bomb.docx"] == "DOCX would unpack to 8.0 MB: refused as a possible zip bomb"
    assert report.summary() == {
        "added": 3,
        "unchanged": 0,
        "replaced": 0,
        "failed": 6,
        "chunks_written": 3,
        "seconds": report.summary()["seconds"],
    }
    assert [d.doc_id for d in await edge_store.list_documents("docs")] == sorted(good)


async def test_store_failure_on_one_file_fails_only_that_file(
    edge_store: EdgeStore, make_ingestor: IngestorFactory, docs: Path
) -> None:
    store = SpyStore(edge_store, fail_upsert=["it/vpn.md"])
    seen: list[FileReport] = []

    report = await make_ingestor(store).ingest(discover([docs]), "docs", on_file=seen.append)

    assert seen == report.files
    assert statuses(report) == {**dict.fromkeys(GOOD_IDS, "added"), "it/vpn.md": "failed"}
    assert by_id(report)["it/vpn.md"].reason == "store error: disk full"
    assert [d.doc_id for d in await edge_store.list_documents("docs")] == [
        i for i in GOOD_IDS if i != "it/vpn.md"
    ]


# --- hybrid search ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def library(
    tmp_path_factory: pytest.TempPathFactory,
    make_ingestor: IngestorFactory,
    write_files: FileWriter,
) -> AsyncIterator[EdgeStore]:
    """Two collections: English office docs ("docs") and Russian HR docs ("hr", BM25 ru)."""
    root = tmp_path_factory.mktemp("library")
    store = EdgeStore(root / "qdrant")
    ingestor = make_ingestor(store)
    english = write_files(root / "en", dict(DOCS))
    russian = write_files(
        root / "ru",
        {
            "отпуск.md": "\n\n".join(
                [
                    "# Отпуск",
                    "Каждый сотрудник получает двадцать восемь дней оплачиваемого отпуска. "
                    "Заявление подают через портал.",
                ]
            ),
            "пропуск.md": "\n\n".join(
                ["# Пропуск", "Потерянный пропуск восстанавливает служба охраны."]
            ),
        },
    )
    await ingestor.ingest(discover([english]), "docs")
    await ingestor.ingest(discover([russian]), "hr", language="ru")
    yield store
    await store.close()


@pytest.fixture
def library_searcher(
    library: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> HybridSearcher:
    return HybridSearcher(
        library, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How much vacation time am I entitled to?", "holidays.md"),
        ("How can I reach internal systems while working remotely?", "it/vpn.md"),
        ("Will the company pay me back for a taxi on a business trip?", "finance/expenses.md"),
        ("Where do I get new ink for the copier?", "printer.txt"),
    ],
)
async def test_search_finds_the_document_for_a_paraphrased_question(
    library_searcher: HybridSearcher, question: str, expected: str
) -> None:
    hits = await library_searcher.search(question, ["docs"], limit=5)
    assert hits[0].chunk.doc_id == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_search_doc_ids_filter_restricts_results(library_searcher: HybridSearcher) -> None:
    question = "How can I reach internal systems while working remotely?"
    allowed = ["holidays.md", "printer.txt"]
    hits = await library_searcher.search(question, ["docs"], limit=10, doc_ids=allowed)
    assert hits
    assert {h.chunk.doc_id for h in hits} <= set(allowed)


async def test_search_across_collections_merges_and_tags_hits(
    library_searcher: HybridSearcher,
) -> None:
    hits = await library_searcher.search("отпуском", ["docs", "hr"], limit=20)

    # The Russian inflection matches through the hr collection's own (Russian) stemmer.
    assert (hits[0].chunk.collection, hits[0].chunk.doc_id) == ("hr", "отпуск.md")
    assert {h.chunk.collection for h in hits} == {"docs", "hr"}
    for hit in hits:
        expected = "hr" if hit.chunk.doc_id in ("отпуск.md", "пропуск.md") else "docs"
        assert hit.chunk.collection == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(await library_searcher.search("отпуском", ["docs", "hr"], limit=3)) == 3


async def test_search_unknown_collection_and_empty_query(
    library_searcher: HybridSearcher,
) -> None:
    with pytest.raises(CollectionNotFoundError, match="'nope'"):
        await library_searcher.search("vacation", ["docs", "nope"])
    assert await library_searcher.search("", ["docs"]) == []
    assert await library_searcher.search("   \n", ["docs"]) == []
    assert await library_searcher.search("vacation", []) == []
