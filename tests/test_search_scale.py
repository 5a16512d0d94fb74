"""The embedded store builds its search graph after a large write and when a run closes the
store; search stays exact (the document vector, which gets no graph, too); shards made before
this layout load and search."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

import kb.edge
from kb.edge import EdgeStore
from kb.embedder import document_vector
from kb.schema import Chunk, ChunkVectors, CollectionSpec, SparseVector
from kb.store import DENSE, DOC, SPARSE

# Wide vectors, so a thousand points pass Qdrant's indexing threshold (10 MB of vectors).
DIM = 4096
POINTS = 1000
PER_DOC = 5
SPEC = CollectionSpec(name="big", dense_size=DIM, embedding_model="test-model")


def corpus() -> list[ChunkVectors]:
    """Random unit vectors, five chunks a document, a few BM25 terms each (the same every run)."""
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((POINTS, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    points = []
    for start in range(0, POINTS, PER_DOC):
        vectors = dense[start : start + PER_DOC].tolist()
        doc = document_vector(vectors)
        for index, vector in enumerate(vectors):
            terms = sorted({int(t) for t in rng.integers(0, 500, 8)} | {1000 + start})
            chunk = Chunk(
                doc_id=f"doc-{start // PER_DOC}",
                collection=SPEC.name,
                title="t",
                heading_path=(),
                chunk_index=index,
                chunk_count=PER_DOC,
                text=f"chunk {start + index}",
                content_hash="h",
                ingested_at=datetime(2025, 1, 1, tzinfo=UTC),
                source="s",
            )
            points.append(ChunkVectors(chunk, vector, SparseVector(terms, [1.0] * len(terms)), doc))
    return points


CORPUS = corpus()


async def write(store: EdgeStore, batch: int = 250) -> None:
    await store.ensure_collection(SPEC)
    for start in range(0, POINTS, batch):
        await store.upsert(SPEC.name, CORPUS[start : start + batch])


def graphed(store: EdgeStore) -> int:
    """Vectors in a search graph: Edge counts BM25 vectors as indexed from the start (an
    inverted index), so what is beyond one per point is the dense vectors' graph."""
    info = store._open(SPEC.name).info()
    return info.indexed_vectors_count - info.points_count


async def assert_exact_candidates(store: EdgeStore) -> None:
    """Point 123's own vector finds it first, with its exact chunk and document cosines."""
    target = CORPUS[123]
    query = SparseVector([1000 + 120], [1.0])
    candidates = await store.candidates(SPEC.name, target.dense, query, limit=10)
    first = candidates[0]
    assert first.point_id == target.chunk.point_id
    assert first.dense == pytest.approx(1.0, abs=1e-4)
    assert first.doc == pytest.approx(float(np.dot(target.dense, target.doc)), abs=1e-4)
    # The document's other chunks carry the query's term: BM25 found them, all five scored.
    same_doc = [c for c in candidates if c.sparse > 0]
    assert len(same_doc) == PER_DOC


async def test_a_large_write_is_indexed_and_search_stays_exact(
    edge_store: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kb.edge, "OPTIMIZE_MIN_POINTS", 600)
    await write(edge_store)
    # Indexed at 750 points (600 and a quarter of the collection reached): the rest waits.
    assert graphed(edge_store) >= 750
    await assert_exact_candidates(edge_store)


async def test_small_writes_wait_and_closing_indexes_them(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    await write(store)
    assert graphed(store) == 0  # below OPTIMIZE_MIN_POINTS: searched by a scan meanwhile
    await assert_exact_candidates(store)
    await store.close()
    reopened = EdgeStore(tmp_path)
    try:
        assert graphed(reopened) >= POINTS
        await assert_exact_candidates(reopened)
    finally:
        await reopened.close()


async def test_a_shard_made_before_loads_and_searches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def old_layout(spec: CollectionSpec) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={
                name: qe.EdgeVectorParams(size=spec.dense_size, distance=qe.Distance.Cosine)
                for name in (DENSE, DOC)
            },
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            max_search_threads=1,
        )

    with monkeypatch.context() as patched:
        patched.setattr(kb.edge, "_shard_config", old_layout)
        old = EdgeStore(tmp_path)
        await write(old)
        await old.close()
    store = EdgeStore(tmp_path)
    try:
        await assert_exact_candidates(store)
        await store.upsert(SPEC.name, CORPUS[:10])
        await store.optimize(SPEC.name)
        await assert_exact_candidates(store)
    finally:
        await store.close()
