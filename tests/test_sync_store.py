"""The store methods a sync needs, on both adapters (Edge, and the server adapter on
qdrant-client's local mode): moving a document to a new id with its vectors, and recording
sync fields on a document's points."""

import pytest

from kb.store import VectorStore
from tests.test_store import COLLECTION, DENSE_QUERY, SPARSE_QUERY, found, loaded, store

__all__ = ["loaded", "store"]
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_rekey_moves_every_vector_and_sets_fields(loaded: VectorStore) -> None:
    before = await found(loaded, COLLECTION, DENSE_QUERY, SPARSE_QUERY, 10)
    fields = {"synced_from": "folder /docs", "source_version": "v2", "source": "/docs/new.md"}
    moved = await loaded.rekey_document(COLLECTION, "alpha", "new.md", fields)
    assert moved == 3
    after = await found(loaded, COLLECTION, DENSE_QUERY, SPARSE_QUERY, 10)
    assert not [key for key in after if key[0] == "alpha"]
    for (doc_id, index), candidate in before.items():
        key = ("new.md" if doc_id == "alpha" else doc_id, index)
        # Exact cosines with the chunk and document vectors: they moved unchanged. BM25's IDF
        # counts the collection's points (Edge counts the removed ones until it compacts), so
        # only which chunks hold a query term is compared.
        assert after[key].dense == pytest.approx(candidate.dense)
        assert after[key].doc == pytest.approx(candidate.doc)
        assert (after[key].sparse > 0) == (candidate.sparse > 0)
    (info,) = await loaded.document_versions(COLLECTION, "new.md")
    assert (info.stored_chunks, info.complete) == (3, True)
    assert (info.synced_from, info.source_version) == ("folder /docs", "v2")
    assert info.source == "/docs/new.md"
    chunks = await loaded.fetch(COLLECTION, info.point_ids(COLLECTION))
    assert [c.chunk_index for c in chunks] == [0, 1, 2]
    assert chunks[1].heading_path == ("Notes", "Operations", "Scaling")
    assert await loaded.document_versions(COLLECTION, "alpha") == []
    assert await loaded.rekey_document(COLLECTION, "missing", "other", {}) == 0


async def test_set_document_fields_touches_only_those_documents(loaded: VectorStore) -> None:
    await loaded.set_document_fields(
        COLLECTION, ["beta", "gamma"], {"synced_at": "2026-01-02T03:04:05+00:00"}
    )
    infos = {d.doc_id: d for d in await loaded.list_documents(COLLECTION)}
    assert f"{infos['beta'].synced_at:%Y-%m-%d %H:%M}" == "2026-01-02 03:04"
    assert infos["gamma"].synced_at is not None
    assert infos["alpha"].synced_at is None
    await loaded.set_document_fields(COLLECTION, [], {"synced_at": "2027-01-01T00:00:00+00:00"})
    assert (await loaded.document_versions(COLLECTION, "alpha"))[0].synced_at is None
