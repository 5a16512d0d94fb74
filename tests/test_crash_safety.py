"""Crashes at every write boundary (a child process killed with SIGKILL before and after each
call that changes the store): the collection stays usable, and a document is always there in
exactly one whole version once the store is opened again."""

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingestion import cli
from ingestion.pipeline import SourceFile, finish_interrupted
from kb.edge import EdgeStore
from kb.embedder import document_vector
from kb.schema import ChunkVectors, DocumentInfo
from tests.crash_child import ingestor

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = "docs"
OLD = "# Leave\n\n" + "\n\n".join(
    f"Paragraph {i}: employees get twenty-eight days of paid leave a year." for i in range(12)
)
NEW = "# Leave\n\n" + "\n\n".join(
    f"Section {i}: from 2027 employees get thirty days of paid leave a year." for i in range(5)
)


def crash(store: Path, files: list[Path], kill_at: int, chunk_tokens: int = 32) -> bool:
    """Ingest in a child killed at the kill_at-th boundary; True when it was killed."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.crash_child", str(store), COLLECTION, str(chunk_tokens),
         str(kill_at), *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    if done.returncode == -9:
        return True
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DONE" in done.stdout
    return False


def reopen(store_path: Path) -> list[DocumentInfo]:
    """Open the store as any command does (finishing interrupted writes); its documents."""

    async def run() -> list[DocumentInfo]:
        store = EdgeStore(store_path)
        try:
            if COLLECTION not in await store.list_collections():
                return []
            await finish_interrupted(store, COLLECTION)
            return await store.list_documents(COLLECTION)
        finally:
            await store.close()

    return asyncio.run(run())


def ingest_now(store_path: Path, files: list[Path], chunk_tokens: int = 32) -> None:
    async def run() -> None:
        store = EdgeStore(store_path)
        try:
            report = await ingestor(store, chunk_tokens).ingest(
                [*map(_source, files)], COLLECTION, force=True
            )
            assert not report.count("failed"), report
        finally:
            await store.close()

    asyncio.run(run())


def _source(path: Path) -> SourceFile:
    return SourceFile(path.name, str(path), path=path)


def every_boundary(
    tmp_path: Path,
    prepare: Callable[[Path], None] | None,
    files: list[Path],
    chunk_tokens: int,
) -> Iterator[tuple[int, Path]]:
    """Yield (kill_at, store path) for each boundary until a run completes unharmed."""
    kill_at = 1
    while True:
        store = tmp_path / f"store-{kill_at}"
        if prepare is not None:
            prepare(store)
        if not crash(store, files, kill_at, chunk_tokens):
            return
        yield kill_at, store
        kill_at += 1
        assert kill_at < 60, "more write boundaries than expected"


def test_crash_while_creating_a_collection_leaves_it_usable(tmp_path: Path) -> None:
    doc = tmp_path / "leave.md"
    doc.write_text(OLD, encoding="utf-8")
    crashes = 0
    for _, store in every_boundary(tmp_path, None, [doc], 32):
        crashes += 1
        # The next run goes through, whatever the crash left.
        ingest_now(store, [doc])
        [version] = reopen(store)
        assert version.complete
        assert {p.name for p in store.iterdir()} >= {COLLECTION}
        assert not [p for p in store.iterdir() if p.name.startswith(".creating-")]
    assert crashes >= 4


@pytest.mark.parametrize(
    ("new_text", "chunk_tokens"),
    [(OLD, 120), (NEW, 32)],
    ids=["forced-rechunk-fewer-chunks", "new-content"],
)
def test_crash_while_replacing_never_loses_the_document(
    tmp_path: Path, new_text: str, chunk_tokens: int
) -> None:
    doc = tmp_path / "leave.md"

    def prepare(store: Path) -> None:
        doc.write_text(OLD, encoding="utf-8")
        ingest_now(store, [doc], chunk_tokens=32)
        doc.write_text(new_text, encoding="utf-8")

    prepare(tmp_path / "probe")
    [before] = reopen(tmp_path / "probe")
    crashes = 0
    for kill_at, store in every_boundary(tmp_path, prepare, [doc], chunk_tokens):
        crashes += 1
        versions = reopen(store)
        # Exactly one version, whole: the old one or the new one, never none and never both.
        assert len(versions) == 1, (kill_at, versions)
        assert versions[0].complete, (kill_at, versions)
        assert versions[0].chunk_count in (before.chunk_count, _chunks_of(tmp_path, chunk_tokens))
    assert crashes >= 2


def _chunks_of(tmp_path: Path, chunk_tokens: int) -> int:
    store = tmp_path / f"clean-{chunk_tokens}"
    ingest_now(store, [tmp_path / "leave.md"], chunk_tokens)
    [version] = reopen(store)
    return version.chunk_count


def test_list_marks_a_document_stored_in_two_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = tmp_path / "store"
    doc = tmp_path / "leave.md"
    doc.write_text(OLD, encoding="utf-8")
    ingest_now(store_path, [doc])
    doc.write_text(NEW, encoding="utf-8")
    # The new version written whole, the old one not yet deleted: a crash in between.
    assert len(asyncio.run(_two_versions(store_path, doc))) == 2

    async def listing() -> int:
        opened = EdgeStore(store_path)
        try:
            args = argparse.Namespace(collection=COLLECTION, json=False)
            return await cli._list(args, opened)
        finally:
            await opened.close()

    # Seen without repairing (as with a Qdrant server, where a write may be running).
    assert asyncio.run(listing()) == 0
    out = capsys.readouterr()
    assert out.out.count("one of several versions") == 2
    assert "1 documents in docs" in out.out
    assert "python -m ingestion repair" in out.err

    # Any command on the embedded store finishes the job first: the newest whole version stays.
    monkeypatch.setenv("QDRANT_PATH", str(store_path))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    assert cli.main(["list", "--collection", COLLECTION]) == 0
    out = capsys.readouterr()
    assert "one of several versions" not in out.out
    [kept] = reopen(store_path)
    assert kept.complete
    assert kept.content_hash == hashlib.sha256(NEW.encode()).hexdigest()


async def _two_versions(store_path: Path, doc: Path) -> list[DocumentInfo]:
    """Write the new version of doc without deleting the old (as a crash in between would)."""
    store = EdgeStore(store_path)
    try:
        pipeline = ingestor(store, 32)
        spec, dense = await pipeline.ensure_collection(COLLECTION)
        data = await asyncio.to_thread(doc.read_bytes)
        chunks = pipeline.chunk(_source(doc), data, COLLECTION, dense)
        vectors = dense.embed_passages([c.embedding_text() for c in chunks])
        sparse = pipeline.sparse.embed_passages(
            [c.embedding_text() for c in chunks], spec.language, spec.bm25_avg_len
        )
        doc_vector = document_vector(vectors)
        await store.upsert(
            COLLECTION,
            [ChunkVectors(c, vectors[i], sparse[i], doc_vector) for i, c in enumerate(chunks)],
        )
        return await store.list_documents(COLLECTION)
    finally:
        await store.close()
