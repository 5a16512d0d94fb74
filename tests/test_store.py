"""One behavioural suite for both VectorStore adapters: Qdrant Edge and the Qdrant server client.

The server adapter runs on qdrant-client's local mode (":memory:"), which supports named dense
and sparse vectors, the IDF modifier, batched queries and collection metadata; it ignores
shard_number, replication_factor and payload indexes, so those are checked on the calls made.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as qe
from pydantic import SecretStr
from qdrant_client import AsyncQdrantClient, models

from kb.edge import EdgeStore
from kb.errors import (
    CollectionMismatchError,
    CollectionNotFoundError,
    StoreLockedError,
    StoreUnavailableError,
)
from kb.schema import Candidate, Chunk, ChunkVectors, CollectionSpec, SparseVector
from kb.server import UPSERT_BATCH, ServerStore
from kb.settings import QdrantSettings
from kb.store import INDEXED_KEYWORDS, VectorStore

# Fixtures run on the session loop (pyproject); the tests must share it.
pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
]

DIM = 8
COLLECTION = "docs"
SPEC = CollectionSpec(name=COLLECTION, dense_size=DIM, embedding_model="test-model", language="en")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_BM25 = qe.Bm25(qe.Bm25Config(language="english"))


def axis(i: int, tilt: dict[int, float] | None = None) -> list[float]:
    """A unit direction, optionally tilted towards others: nearest neighbours are known."""
    vector = [0.0] * DIM
    vector[i] = 1.0
    for j, weight in (tilt or {}).items():
        vector[j] = weight
    return vector


def bm25_document(text: str) -> SparseVector:
    vector = _BM25.embed_document(text)
    return SparseVector(indices=list(vector.indices), values=list(vector.values))


def bm25_query(text: str) -> SparseVector:
    vector = _BM25.embed_query(text)
    return SparseVector(indices=list(vector.indices), values=list(vector.values))


def chunk(
    doc_id: str,
    index: int,
    count: int,
    text: str,
    *,
    content_hash: str,
    title: str,
    ingested_at: datetime = T0,
    heading_path: tuple[str, ...] = (),
    page: int | None = None,
    collection: str = COLLECTION,
) -> Chunk:
    return Chunk(
        doc_id=doc_id,
        collection=collection,
        title=title,
        heading_path=heading_path,
        chunk_index=index,
        chunk_count=count,
        text=text,
        content_hash=content_hash,
        ingested_at=ingested_at,
        source=f"/docs/{doc_id}.md",
        page=page,
        access={"readers": ["ops"]} if doc_id == "alpha" else {},
    )


def point(c: Chunk, dense: list[float], doc: list[float] | None = None) -> ChunkVectors:
    sparse = bm25_document(c.embedding_text())
    return ChunkVectors(chunk=c, dense=dense, sparse=sparse, doc=doc or dense)


ALPHA = [
    chunk(
        "alpha", 0, 3, "Raspberry pie recipe with whipped cream", content_hash="a1", title="Notes"
    ),
    chunk(
        "alpha",
        1,
        3,
        "Kubernetes cluster autoscaling with kubernetes operators and node pools",
        content_hash="a1",
        title="Notes",
        heading_path=("Notes", "Operations", "Scaling"),
        page=3,
    ),
    chunk(
        "alpha",
        2,
        3,
        "Volcano eruption, lava flows and ash clouds",
        content_hash="a1",
        title="Notes",
    ),
]
BETA = [
    chunk("beta", 0, 2, "Telescope mirror grinding takes patience", content_hash="b1", title="Log"),
    chunk(
        "beta",
        1,
        2,
        "Tomatoes and soil in the garden; kubernetes is mentioned here once",
        content_hash="b1",
        title="Log",
    ),
]
GAMMA = [
    chunk("gamma", 0, 1, "Sourdough starter, yeast and flour", content_hash="g1", title="Bakery")
]
CORPUS = [
    point(GAMMA[0], axis(5)),
    # alpha's document vector points elsewhere than its chunks: its score must be its own.
    point(ALPHA[0], axis(0), doc=axis(6)),
    point(ALPHA[1], axis(1), doc=axis(6)),
    point(ALPHA[2], axis(2), doc=axis(6)),
    point(BETA[0], axis(3)),
    point(BETA[1], axis(4)),
]
# Nearest to alpha#1, then alpha#0; every other chunk is orthogonal.
DENSE_QUERY = axis(1, {0: 0.3})
SPARSE_QUERY = bm25_query("kubernetes autoscaling")


def open_store(kind: str, path: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(path / "qdrant")
    return ServerStore(AsyncQdrantClient(location=":memory:"))


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    opened = open_store(request.param, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def loaded(store: VectorStore) -> VectorStore:
    await store.ensure_collection(SPEC)
    await store.upsert(COLLECTION, CORPUS)
    return store


@pytest.fixture(scope="module", params=["edge", "server"])
async def corpus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VectorStore]:
    """The corpus loaded once per adapter, for tests that only read (Edge creation is slow)."""
    opened = open_store(request.param, tmp_path_factory.mktemp("corpus"))
    await opened.ensure_collection(SPEC)
    await opened.upsert(COLLECTION, CORPUS)
    yield opened
    await opened.close()


async def found(
    store: VectorStore,
    collection: str,
    dense: list[float],
    sparse: SparseVector,
    limit: int,
    *,
    doc_ids: list[str] | None = None,
) -> dict[tuple[str, int], Candidate]:
    """The store's candidates keyed by (doc id, chunk index), through fetch."""
    candidates = await store.candidates(collection, dense, sparse, limit, doc_ids)
    chunks = await store.fetch(collection, [c.point_id for c in candidates])
    assert [c.point_id for c in chunks] == [c.point_id for c in candidates]
    return {(ch.doc_id, ch.chunk_index): c for ch, c in zip(chunks, candidates, strict=True)}


def best(by_key: dict[tuple[str, int], Candidate], signal: str) -> list[tuple[str, int]]:
    """Keys with a positive score on one signal, best first."""
    scored = [(getattr(c, signal), key) for key, c in by_key.items() if getattr(c, signal) > 0]
    return [key for _, key in sorted(scored, reverse=True)]


# --- collections -------------------------------------------------------------------------


async def test_ensure_collection_creates_and_is_idempotent(store: VectorStore) -> None:
    assert await store.get_collection(COLLECTION) is None
    assert await store.ensure_collection(SPEC) == SPEC
    assert await store.get_collection(COLLECTION) == SPEC
    assert await store.ensure_collection(SPEC) == SPEC
    assert await store.list_collections() == [COLLECTION]


@pytest.mark.parametrize(
    "changes",
    [{"embedding_model": "other-model"}, {"dense_size": DIM * 2}, {"language": "ru"}],
    ids=["model", "size", "language"],
)
async def test_ensure_collection_rejects_another_spec(
    store: VectorStore, changes: dict[str, Any]
) -> None:
    await store.ensure_collection(SPEC)
    with pytest.raises(CollectionMismatchError, match=COLLECTION):
        await store.ensure_collection(replace(SPEC, **changes))
    assert await store.get_collection(COLLECTION) == SPEC


async def test_list_collections_sorted(store: VectorStore) -> None:
    assert await store.list_collections() == []
    for name in ("zeta", "alpha_1", "mid-2"):
        await store.ensure_collection(replace(SPEC, name=name))
    assert await store.list_collections() == ["alpha_1", "mid-2", "zeta"]


@pytest.mark.parametrize("name", ["", "../escape", "has space", "_leading", "x" * 65, "a/b"])
async def test_invalid_collection_name_rejected(store: VectorStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid collection name"):
        await store.ensure_collection(replace(SPEC, name=name))
    with pytest.raises(ValueError, match="invalid collection name"):
        await store.get_collection(name)
    with pytest.raises(ValueError, match="invalid collection name"):
        await store.candidates(name, DENSE_QUERY, SPARSE_QUERY, 3)


async def test_missing_collection_raises_not_found(corpus: VectorStore) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: corpus.candidates("missing", DENSE_QUERY, SPARSE_QUERY, 3),
        lambda: corpus.fetch("missing", [ALPHA[0].point_id]),
        lambda: corpus.upsert("missing", CORPUS[:1]),
        lambda: corpus.delete_document("missing", "alpha"),
        lambda: corpus.document_versions("missing", "alpha"),
        lambda: corpus.list_documents("missing"),
    ]
    for call in calls:
        with pytest.raises(CollectionNotFoundError, match="'missing' does not exist"):
            await call()


# --- search --------------------------------------------------------------------------------


async def test_dense_candidates_are_the_nearest(corpus: VectorStore) -> None:
    by_key = await found(corpus, COLLECTION, DENSE_QUERY, bm25_query("the"), limit=2)
    # No BM25 terms: exactly the two nearest chunks, with their exact cosines.
    assert best(by_key, "dense") == [("alpha", 1), ("alpha", 0)]
    assert set(by_key) == {("alpha", 1), ("alpha", 0)}
    assert by_key[("alpha", 1)].dense == pytest.approx(1 / (1 + 0.3**2) ** 0.5, abs=1e-4)
    assert by_key[("alpha", 0)].dense == pytest.approx(0.3 / (1 + 0.3**2) ** 0.5, abs=1e-4)


async def test_bm25_candidates_rank_by_terms(corpus: VectorStore) -> None:
    by_key = await found(corpus, COLLECTION, axis(7), SPARSE_QUERY, limit=10)
    # Only chunks sharing a term score: both terms (and kubernetes twice) beat one mention.
    assert best(by_key, "sparse") == [("alpha", 1), ("beta", 1)]


async def test_every_candidate_has_all_its_scores(corpus: VectorStore) -> None:
    # alpha#1 comes from both lists, alpha#0 from dense only, beta#1 from BM25 only.
    by_key = await found(corpus, COLLECTION, DENSE_QUERY, SPARSE_QUERY, limit=2)
    assert set(by_key) == {("alpha", 1), ("alpha", 0), ("beta", 1)}
    assert by_key[("alpha", 0)].sparse == 0.0
    assert by_key[("beta", 1)].sparse > 0.0
    # A BM25-only candidate still gets its exact cosines (orthogonal here: 0).
    assert by_key[("beta", 1)].dense == pytest.approx(0.0, abs=1e-6)
    # The document score is the document vector's, not the chunk's (alpha's points to axis 6).
    assert by_key[("alpha", 1)].doc == pytest.approx(0.0, abs=1e-6)
    on_doc = await found(corpus, COLLECTION, axis(6), SPARSE_QUERY, limit=2)
    assert on_doc[("alpha", 1)].doc == pytest.approx(1.0, abs=1e-4)


async def test_bm25_query_without_terms_brings_dense_only(corpus: VectorStore) -> None:
    empty = bm25_query("the and of")
    assert empty.indices == []
    by_key = await found(corpus, COLLECTION, DENSE_QUERY, empty, limit=3)
    assert len(by_key) == 3
    assert all(c.sparse == 0.0 for c in by_key.values())


async def test_fetch_returns_chunks_intact_in_order(corpus: VectorStore) -> None:
    wanted = [BETA[1].point_id, "00000000-0000-0000-0000-000000000000", ALPHA[1].point_id]
    chunks = await corpus.fetch(COLLECTION, [*wanted, ALPHA[0].point_id])
    # Order as asked; an id that is not stored is left out.
    assert chunks == [BETA[1], ALPHA[1], ALPHA[0]]
    assert chunks[1].heading_path == ("Notes", "Operations", "Scaling")
    assert chunks[1].page == 3
    assert chunks[1].ingested_at == T0
    assert chunks[2].page is None
    assert await corpus.fetch(COLLECTION, []) == []


async def test_doc_ids_filter_restricts_both_retrievers(corpus: VectorStore) -> None:
    by_key = await found(
        corpus, COLLECTION, DENSE_QUERY, SPARSE_QUERY, limit=10, doc_ids=["beta", "gamma"]
    )
    # The nearest and best-matching chunks are alpha's: the filter must keep them out.
    assert sorted(by_key) == [("beta", 0), ("beta", 1), ("gamma", 0)]
    assert best(by_key, "sparse") == [("beta", 1)]

    by_key = await found(corpus, COLLECTION, axis(5), SPARSE_QUERY, limit=10, doc_ids=["alpha"])
    assert {doc for doc, _ in by_key} == {"alpha"}
    assert len(by_key) == 3
    assert best(by_key, "sparse") == [("alpha", 1)]


async def test_empty_doc_ids_filter_finds_nothing(corpus: VectorStore) -> None:
    assert await corpus.candidates(COLLECTION, DENSE_QUERY, SPARSE_QUERY, 10, doc_ids=[]) == []


async def test_upsert_overwrites_same_point(loaded: VectorStore) -> None:
    await loaded.upsert(COLLECTION, CORPUS)
    docs = await loaded.list_documents(COLLECTION)
    assert [(d.doc_id, d.stored_chunks) for d in docs] == [("alpha", 3), ("beta", 2), ("gamma", 1)]


# --- documents -----------------------------------------------------------------------------


async def test_list_documents_sorted_and_complete(corpus: VectorStore) -> None:
    docs = await corpus.list_documents(COLLECTION)
    assert [d.doc_id for d in docs] == ["alpha", "beta", "gamma"]
    alpha = docs[0]
    assert (alpha.title, alpha.source, alpha.content_hash) == ("Notes", "/docs/alpha.md", "a1")
    assert (alpha.chunk_count, alpha.stored_chunks, alpha.ingested_at) == (3, 3, T0)
    assert all(d.complete for d in docs)


async def test_replacement_keeps_new_version(loaded: VectorStore) -> None:
    later = T0 + timedelta(hours=1)
    new_alpha = [
        chunk(
            "alpha",
            i,
            2,
            f"Rewritten part {i}",
            content_hash="a2",
            title="Notes",
            ingested_at=later,
        )
        for i in range(2)
    ]
    # Interrupted write of the new version: one chunk of two stored.
    await loaded.upsert(COLLECTION, [point(new_alpha[0], axis(6))])
    versions = await loaded.document_versions(COLLECTION, "alpha")
    assert [(v.content_hash, v.stored_chunks, v.complete) for v in versions] == [
        ("a1", 3, True),
        ("a2", 1, False),
    ]

    await loaded.upsert(COLLECTION, [point(new_alpha[1], axis(7))])
    versions = await loaded.document_versions(COLLECTION, "alpha")
    assert [(v.content_hash, v.complete) for v in versions] == [("a1", True), ("a2", True)]
    assert versions[1].ingested_at == later

    keep = {c.point_id for c in new_alpha}
    assert set(versions[1].point_ids(COLLECTION)) == keep
    assert await loaded.delete_document(COLLECTION, "alpha", keep=keep) == 3
    versions = await loaded.document_versions(COLLECTION, "alpha")
    assert [(v.content_hash, v.stored_chunks) for v in versions] == [("a2", 2)]
    # Nothing left to drop: the kept version stays.
    assert await loaded.delete_document(COLLECTION, "alpha", keep=keep) == 0
    assert [d.doc_id for d in await loaded.list_documents(COLLECTION)] == ["alpha", "beta", "gamma"]


async def test_delete_document_removes_every_version(loaded: VectorStore) -> None:
    assert await loaded.delete_document(COLLECTION, "beta") == 2
    assert await loaded.delete_document(COLLECTION, "beta") == 0
    assert await loaded.delete_document(COLLECTION, "never-stored") == 0
    assert await loaded.document_versions(COLLECTION, "beta") == []
    assert [d.doc_id for d in await loaded.list_documents(COLLECTION)] == ["alpha", "gamma"]
    by_key = await found(loaded, COLLECTION, axis(3), SPARSE_QUERY, limit=10)
    assert "beta" not in {doc for doc, _ in by_key}


async def test_collections_are_separate(loaded: VectorStore) -> None:
    await loaded.ensure_collection(replace(SPEC, name="other"))
    assert await loaded.list_documents("other") == []
    assert await loaded.candidates("other", DENSE_QUERY, SPARSE_QUERY, 3) == []


# --- Edge only -----------------------------------------------------------------------------


async def test_edge_folder_is_locked_and_persists(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path)
    try:
        await first.ensure_collection(SPEC)
        await first.upsert(COLLECTION, CORPUS)
        with pytest.raises(StoreLockedError) as excinfo:
            EdgeStore(tmp_path)
        assert "Stop that process" in str(excinfo.value)
        assert "QDRANT_URL" in str(excinfo.value)
    finally:
        await first.close()

    second = EdgeStore(tmp_path)
    try:
        assert await second.list_collections() == [COLLECTION]
        assert await second.get_collection(COLLECTION) == SPEC
        assert [d.doc_id for d in await second.list_documents(COLLECTION)] == [
            "alpha",
            "beta",
            "gamma",
        ]
        by_key = await found(second, COLLECTION, DENSE_QUERY, SPARSE_QUERY, limit=3)
        assert best(by_key, "dense")[0] == best(by_key, "sparse")[0] == ("alpha", 1)
    finally:
        await second.close()


# --- server only ---------------------------------------------------------------------------


class Recorder:
    """Wraps a client method and records the keyword arguments of each call."""

    def __init__(self, method: Callable[..., Awaitable[Any]]) -> None:
        self.method = method
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append({"args": args, **kwargs})
        return await self.method(*args, **kwargs)


async def test_server_creation_passes_sharding_and_indexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = AsyncQdrantClient(location=":memory:")
    # Local mode accepts and ignores sharding and payload indexes: check what was asked for.
    create = Recorder(client.create_collection)
    index = Recorder(client.create_payload_index)
    monkeypatch.setattr(client, "create_collection", create)
    monkeypatch.setattr(client, "create_payload_index", index)
    store = ServerStore(client, shard_number=3, replication_factor=2)
    try:
        await store.ensure_collection(SPEC)
    finally:
        await store.close()

    (call,) = create.calls
    assert (call["shard_number"], call["replication_factor"]) == (3, 2)
    assert call["vectors_config"]["dense"].size == DIM
    assert call["vectors_config"]["dense"].distance == models.Distance.COSINE
    assert call["sparse_vectors_config"]["bm25"].modifier == models.Modifier.IDF
    requested = {(c["field_name"], c["field_schema"]) for c in index.calls}
    assert requested == {
        *((key, models.PayloadSchemaType.KEYWORD) for key in INDEXED_KEYWORDS),
    }


async def test_server_upserts_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    client = AsyncQdrantClient(location=":memory:")
    upsert = Recorder(client.upsert)
    monkeypatch.setattr(client, "upsert", upsert)
    store = ServerStore(client)
    total = UPSERT_BATCH * 2 + 10
    big = [
        point(chunk("big", i, total, f"part {i}", content_hash="h", title="Big"), axis(i % DIM))
        for i in range(total)
    ]
    try:
        await store.ensure_collection(SPEC)
        await store.upsert(COLLECTION, big)
        (info,) = await store.document_versions(COLLECTION, "big")
    finally:
        await store.close()
    assert [len(c["points"]) for c in upsert.calls] == [UPSERT_BATCH, UPSERT_BATCH, 10]
    assert all(c["wait"] is True for c in upsert.calls)
    assert (info.stored_chunks, info.complete) == (total, True)


async def test_server_spec_persists_in_collection_metadata(tmp_path: Path) -> None:
    store = ServerStore(AsyncQdrantClient(path=str(tmp_path)))
    try:
        await store.ensure_collection(SPEC)
    finally:
        await store.close()
    reopened = ServerStore(AsyncQdrantClient(path=str(tmp_path)))
    try:
        assert await reopened.get_collection(COLLECTION) == SPEC
        with pytest.raises(CollectionMismatchError):
            await reopened.ensure_collection(replace(SPEC, embedding_model="other-model"))
    finally:
        await reopened.close()


async def test_server_rejects_collection_without_spec() -> None:
    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "foreign",
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
    )
    store = ServerStore(client)
    try:
        with pytest.raises(CollectionMismatchError, match="no knowledge-base spec"):
            await store.ensure_collection(replace(SPEC, name="foreign"))
    finally:
        await store.close()


async def test_server_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="QDRANT_URL"):
        ServerStore.from_settings(QdrantSettings(url=None))
    built: list[dict[str, Any]] = []

    def fake_client(**kwargs: Any) -> AsyncQdrantClient:
        built.append(kwargs)
        return AsyncQdrantClient(location=":memory:")

    # A real remote client would start probing the URL for its version: record instead.
    monkeypatch.setattr("kb.server.AsyncQdrantClient", fake_client)
    settings = QdrantSettings(
        url="https://qdrant.example:6333",
        api_key=SecretStr("secret"),
        shard_number=2,
        replication_factor=3,
        timeout_s=0.5,
    )
    store = ServerStore.from_settings(settings)
    try:
        assert built == [{"url": "https://qdrant.example:6333", "api_key": "secret", "timeout": 1}]
        await store.ensure_collection(SPEC)
        assert await store.get_collection(COLLECTION) == SPEC
    finally:
        await store.close()


async def test_unreachable_server_is_one_clear_error() -> None:
    """A server that is down gives StoreUnavailableError naming the URL, not a client error."""
    store = ServerStore.from_settings(QdrantSettings(url="http://127.0.0.1:9", timeout_s=2))
    try:
        with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:9"):
            await store.get_collection("docs")
        with pytest.raises(StoreUnavailableError, match="QDRANT_URL"):
            await store.list_collections()
    finally:
        await store.close()
