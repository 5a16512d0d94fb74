"""Folder sync on the real embedder and a real Qdrant Edge store: add, change, rename (moved
without embedding), delete, failures that delete nothing, an empty listing, a dry run, the
schedule and the watcher."""

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from ingestion.pipeline import Ingestor, discover
from ingestion.sources.base import SourceDocument, SourceError
from ingestion.sources.cli import every, watch
from ingestion.sources.folder import FolderSource
from ingestion.sources.sync import SyncReport, sync
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders
from kb.schema import DocumentInfo

IngestorFactory = Callable[..., Ingestor]
FileWriter = Callable[[Path, dict[str, str | bytes]], Path]

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

DOCS: dict[str, str | bytes] = {
    "holidays.md": "# Holidays\n\nEvery employee gets twenty-eight calendar days of paid annual "
    "leave, approved by the manager in the HR portal.",
    "it/vpn.md": "# Remote access\n\n"
    + "\n\n".join(
        f"Step {i}: connect to the office network with the WireGuard VPN client; the IT "
        "helpdesk issues the configuration file and checks the connection."
        for i in range(6)
    ),
    "finance/expenses.md": "# Expense reports\n\nBusiness travel costs are reimbursed within "
    "thirty days with receipts attached.",
}


class CountingDense:
    """The real dense model, counting the passages it embeds."""

    def __init__(self, inner: DenseEmbedder) -> None:
        self.inner = inner
        self.passages = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_passages(self, texts: Sequence[str]) -> Any:
        self.passages += len(texts)
        return self.inner.embed_passages(texts)


@pytest.fixture
def counting(dense_embedder: DenseEmbedder) -> CountingDense:
    return CountingDense(dense_embedder)


@pytest.fixture
def ingestor(
    edge_store: EdgeStore, make_ingestor: IngestorFactory, counting: CountingDense
) -> Ingestor:
    built = make_ingestor(edge_store)
    built.dense = DenseEmbedders.of(counting)
    return built


@pytest.fixture
def folder(tmp_path: Path, write_files: FileWriter) -> Path:
    return write_files(tmp_path / "docs", dict(DOCS))


async def documents(store: EdgeStore, name: str = "kb") -> dict[str, DocumentInfo]:
    return {d.doc_id: d for d in await store.list_documents(name)}


async def vectors(store: EdgeStore, doc_id: str, name: str = "kb") -> list[list[float]]:
    """Each chunk's dense, document and BM25 vectors (indices, then weights), in order."""
    shard = store._open(name)
    info = (await documents(store, name))[doc_id]
    ids: list[int | uuid.UUID | str] = list(info.point_ids(name))
    records = shard.retrieve(point_ids=ids, with_payload=True, with_vector=True)
    ordered = sorted(records, key=lambda r: int((r.payload or {})["chunk_index"]))
    found = []
    for record in ordered:
        vector = cast(dict[str, Any], record.vector)
        sparse = vector["bm25"]
        found.append([*vector["dense"], *vector["doc"], *sparse.indices, *sparse.values])
    return found


async def test_first_sync_adds_everything_and_records_the_source(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    source = FolderSource(folder)
    report = await sync(source, "kb", ingestor)
    assert report.ok, report
    assert sorted(report.added) == sorted(DOCS)
    stored = await documents(edge_store)
    assert sorted(stored) == sorted(DOCS)
    for info in stored.values():
        assert info.synced_from == f"folder {folder}"
        assert info.source_version == info.content_hash
        assert info.synced_at is not None
    chunk = (await edge_store.fetch("kb", stored["it/vpn.md"].point_ids("kb")))[0]
    assert chunk.source == str((folder / "it/vpn.md").resolve())
    assert chunk.synced_from == source.label

    again = await sync(FolderSource(folder), "kb", ingestor)
    assert again.ok
    assert not again.added
    assert not again.changed
    assert not again.deleted
    assert sorted(again.unchanged) == sorted(DOCS)
    later = await documents(edge_store)
    assert all(later[d].synced_at > stored[d].synced_at for d in DOCS)  # type: ignore[operator]


async def test_change_rename_and_delete_in_one_sync(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore, counting: CountingDense
) -> None:
    source = FolderSource(folder)
    await sync(source, "kb", ingestor)
    before = await vectors(edge_store, "it/vpn.md")
    assert len(before) > 1
    (folder / "holidays.md").write_text(
        "# Holidays\n\nEvery employee gets thirty calendar days of leave.", encoding="utf-8"
    )
    (folder / "it/vpn.md").rename(folder / "it/remote-access.md")
    (folder / "finance/expenses.md").unlink()
    counting.passages = 0

    report = await sync(source, "kb", ingestor)

    assert report.ok, report
    assert report.changed == ["holidays.md"]
    assert report.renamed == [("it/vpn.md", "it/remote-access.md")]
    assert report.deleted == ["finance/expenses.md"]
    assert report.added == []
    stored = await documents(edge_store)
    assert sorted(stored) == ["holidays.md", "it/remote-access.md"]
    assert stored["holidays.md"].complete
    assert stored["it/remote-access.md"].complete
    # Only the changed document was embedded; the renamed one kept its vectors.
    assert counting.passages == stored["holidays.md"].chunk_count
    after = await vectors(edge_store, "it/remote-access.md")
    assert len(after) == len(before)
    assert all(np.allclose(a, b) for a, b in zip(after, before, strict=True))
    moved = await edge_store.fetch("kb", stored["it/remote-access.md"].point_ids("kb"))
    assert moved
    assert all(c.doc_id == "it/remote-access.md" for c in moved)
    assert moved[0].source == str((folder / "it/remote-access.md").resolve())
    hits = await edge_store.fetch("kb", stored["holidays.md"].point_ids("kb"))
    assert "thirty calendar days" in " ".join(c.text for c in hits)


async def test_a_folder_added_by_hand_is_adopted_without_embedding(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore, counting: CountingDense
) -> None:
    await ingestor.ingest(discover([folder]), "kb")
    (folder / "extra.md").write_text("# Parking\n\nAsk the front desk.", encoding="utf-8")
    counting.passages = 0
    report = await sync(FolderSource(folder), "kb", ingestor)
    assert report.added == ["extra.md"]
    assert sorted(report.unchanged) == sorted(DOCS)
    assert counting.passages == (await documents(edge_store))["extra.md"].chunk_count
    assert all(d.synced_from == f"folder {folder}" for d in (await documents(edge_store)).values())


async def test_documents_of_other_sources_and_uploads_are_never_deleted(
    folder: Path, tmp_path: Path, ingestor: Ingestor, edge_store: EdgeStore, write_files: FileWriter
) -> None:
    other = write_files(tmp_path / "other", {"faq.md": "# FAQ\n\nThe canteen opens at noon."})
    await ingestor.ingest(discover([tmp_path / "other" / "faq.md"]), "kb")  # an upload
    other_source = FolderSource(write_files(tmp_path / "wiki", {"a.md": "# A\n\nAlpha text."}))
    await sync(other_source, "kb", ingestor)
    await sync(FolderSource(folder), "kb", ingestor)
    shutil.rmtree(folder / "it")
    report = await sync(FolderSource(folder), "kb", ingestor)
    assert report.deleted == ["it/vpn.md"]
    assert {"faq.md", "a.md"} <= set(await documents(edge_store))
    # The same id claimed by a second source is refused by name, not taken over.
    write_files(folder, {"a.md": "# A\n\nAnother alpha."})
    clash = await sync(FolderSource(folder), "kb", ingestor)
    assert [d for d, _ in clash.failed] == ["a.md"]
    assert "already synced from" in clash.failed[0][1]
    assert (await documents(edge_store))["a.md"].synced_from == other_source.label
    assert other.exists()


async def test_a_missing_folder_deletes_nothing_and_names_the_source(
    folder: Path, tmp_path: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    await sync(FolderSource(folder), "kb", ingestor)
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    report = await sync(FolderSource(folder), "kb", ingestor)
    assert not report.ok
    assert report.error is not None
    assert str(folder) in report.error
    assert "no such folder" in report.error
    assert not report.deleted
    assert sorted(await documents(edge_store)) == sorted(DOCS)


async def test_an_empty_folder_deletes_nothing_unless_allowed(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    await sync(FolderSource(folder), "kb", ingestor)
    for name in DOCS:
        (folder / name).unlink()
    refused = await sync(FolderSource(folder), "kb", ingestor)
    assert refused.error is not None
    assert "listed no documents" in refused.error
    assert "--allow-empty" in refused.error
    assert sorted(await documents(edge_store)) == sorted(DOCS)
    allowed = await sync(FolderSource(folder), "kb", ingestor, allow_empty=True)
    assert allowed.ok
    assert sorted(allowed.deleted) == sorted(DOCS)
    assert await documents(edge_store) == {}


async def test_an_unreadable_subfolder_keeps_its_documents(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sync(FolderSource(folder), "kb", ingestor)
    if os.geteuid() == 0:
        # Root lists any folder whatever its mode: refuse this one at the walk instead.
        real_walk = os.walk

        def walk(top: Any, onerror: Any = None, **kwargs: Any) -> Any:
            for here, folders, names in real_walk(top, onerror=onerror, **kwargs):
                if Path(here).name == "it":
                    onerror(PermissionError(13, "Permission denied", here))
                    folders.clear()
                    continue
                yield here, folders, names

        monkeypatch.setattr(os, "walk", walk)
    (folder / "it").chmod(0)
    try:
        report = await sync(FolderSource(folder), "kb", ingestor)
    finally:
        (folder / "it").chmod(0o755)
        monkeypatch.undo()
    assert not report.deleted
    assert any(p.startswith("it") for p in report.problems)
    assert sorted(await documents(edge_store)) == sorted(DOCS)


async def test_a_broken_link_to_a_synced_file_keeps_it(
    folder: Path, tmp_path: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    target = tmp_path / "outside.md"
    target.write_text("# Outside\n\nLinked into the folder.", encoding="utf-8")
    (folder / "linked.md").symlink_to(target)
    source = FolderSource(folder)
    assert "linked.md" in (await sync(source, "kb", ingestor)).added
    target.unlink()
    report = await sync(source, "kb", ingestor)
    assert not report.deleted
    assert not report.ok
    assert any(p.startswith("linked.md: broken symbolic link") for p in report.problems)
    assert "linked.md" in await documents(edge_store)


async def test_a_broken_file_is_reported_by_name_and_the_rest_go_in(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore, write_files: FileWriter
) -> None:
    await sync(FolderSource(folder), "kb", ingestor)
    write_files(folder, {"broken.pdf": b"%PDF-1.7 not really", "new.md": "# New\n\nFresh text."})
    (folder / "holidays.md").write_bytes(b"%PDF-1.4 garbage")
    (folder / "holidays.md").rename(folder / "holidays.pdf")
    report = await sync(FolderSource(folder), "kb", ingestor)
    failed = dict(report.failed)
    assert set(failed) == {"broken.pdf", "holidays.pdf"}
    assert report.added == ["new.md"]
    stored = await documents(edge_store)
    assert "new.md" in stored
    assert "broken.pdf" not in stored


class FailingSource:
    """A source whose listing or reading fails the way a real one can."""

    def __init__(self, label: str, listing: list[SourceDocument] | Exception) -> None:
        self._label = label
        self.listing = listing
        self.read_fails: set[str] = set()
        # Each document's text (a default one where not set).
        self.texts: dict[str, str] = {}

    @property
    def label(self) -> str:
        return self._label

    async def list(self, known: Mapping[str, str]) -> list[SourceDocument]:
        if isinstance(self.listing, Exception):
            raise self.listing
        return self.listing

    async def read(self, document: SourceDocument) -> bytes:
        if document.doc_id in self.read_fails:
            raise SourceError(f"{document.doc_id}: 401 Unauthorized")
        text = self.texts.get(document.doc_id, "The first edition of this page.")
        return f"# Page\n\n{text}".encode()

    async def aclose(self) -> None:
        pass


async def test_a_failing_source_changes_nothing(ingestor: Ingestor, edge_store: EdgeStore) -> None:
    docs = [SourceDocument(f"page-{i}", f"page-{i}.md", "v1") for i in range(3)]
    source = FailingSource("web https://wiki.example.com/", docs)
    first = await sync(source, "kb", ingestor)
    assert first.ok
    assert len(first.added) == 3
    source.listing = SourceError("web https://wiki.example.com/: 401 Unauthorized")
    refused = await sync(source, "kb", ingestor)
    assert refused.error == "web https://wiki.example.com/: 401 Unauthorized"
    source.listing = ConnectionResetError("peer reset")
    crashed = await sync(source, "kb", ingestor)
    assert crashed.error is not None
    assert "ConnectionResetError" in crashed.error
    assert "wiki.example.com" in crashed.error
    assert len(await documents(edge_store)) == 3
    # A page that cannot be read keeps its old version; the others change.
    source.listing = [SourceDocument(f"page-{i}", f"page-{i}.md", "v2") for i in range(3)]
    source.texts = {f"page-{i}": f"The second edition of page {i}." for i in range(3)}
    source.read_fails = {"page-1"}
    partial = await sync(source, "kb", ingestor)
    assert sorted(partial.changed) == ["page-0", "page-2"]
    assert partial.failed == [("page-1", "page-1: 401 Unauthorized")]
    stored = await documents(edge_store)
    assert stored["page-1"].source_version == "v1"
    assert stored["page-0"].source_version == "v2"
    # A new version with the same bytes records the version, embedding nothing.
    source.read_fails = set()
    source.listing = [SourceDocument("page-0", "page-0.md", "v3"), *source.listing[1:]]
    same = await sync(source, "kb", ingestor)
    assert "page-0" not in same.changed
    assert (await documents(edge_store))["page-0"].source_version == "v3"


async def test_a_rename_is_found_by_content_when_the_listing_has_no_hash(
    ingestor: Ingestor, edge_store: EdgeStore, counting: CountingDense
) -> None:
    source = FailingSource("web https://wiki.example.com/", [SourceDocument("a", "a.md", "v1")])
    await sync(source, "kb", ingestor)
    counting.passages = 0
    source.listing = [SourceDocument("b", "b.md", "v1")]
    report = await sync(source, "kb", ingestor)
    assert report.renamed == [("a", "b")]
    assert counting.passages == 0
    assert sorted(await documents(edge_store)) == ["b"]


async def test_dry_run_changes_nothing(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    await sync(FolderSource(folder), "kb", ingestor)
    before = await documents(edge_store)
    (folder / "holidays.md").write_text("# Holidays\n\nNew rules.", encoding="utf-8")
    (folder / "it/vpn.md").rename(folder / "vpn.md")
    (folder / "finance/expenses.md").unlink()
    (folder / "new.md").write_text("# New\n\nA new page.", encoding="utf-8")
    report = await sync(FolderSource(folder), "kb", ingestor, dry_run=True)
    assert report.dry_run
    assert (report.added, report.changed) == (["new.md"], ["holidays.md"])
    assert report.renamed == [("it/vpn.md", "vpn.md")]
    assert report.deleted == ["finance/expenses.md"]
    assert await documents(edge_store) == before


async def test_every_runs_rounds_on_a_schedule(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    source = FolderSource(folder)
    reports: list[SyncReport] = []

    async def round_() -> int:
        reports.append(await sync(source, "kb", ingestor))
        if len(reports) == 1:
            (folder / "holidays.md").unlink()
        return 0 if reports[-1].ok else 1

    assert await every(round_, 0.05, rounds=2) == 0
    assert len(reports) == 2
    assert reports[1].deleted == ["holidays.md"]
    assert "holidays.md" not in await documents(edge_store)


async def test_watch_syncs_when_the_folder_changes(
    folder: Path, ingestor: Ingestor, edge_store: EdgeStore
) -> None:
    source = FolderSource(folder)
    stop = asyncio.Event()
    rounds: list[SyncReport] = []

    async def round_() -> int:
        rounds.append(await sync(source, "kb", ingestor))
        return 0

    task = asyncio.create_task(watch([folder], round_, stop))
    try:
        for _ in range(100):
            if rounds:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the watcher is set up after the first round
        (folder / "watched.md").write_text("# Watched\n\nSeen by the watcher.", encoding="utf-8")
        for _ in range(200):
            if "watched.md" in await documents(edge_store):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert "watched.md" in await documents(edge_store)
    assert any(r.added == ["watched.md"] for r in rounds[1:])
