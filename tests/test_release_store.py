"""Versions of a knowledge base on both adapters (Edge, and the server adapter on
qdrant-client's local mode): a candidate starts as a copy of live, takes writes while users
keep reading live, is released by an atomic switch, and rolled back; what is deleted when;
a server collection created before versions becomes an alias; searches running during
releases always read one whole version."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from kb.edge import EdgeStore
from kb.errors import CollectionNotFoundError
from kb.server import ServerStore
from kb.store import VersionedStore
from kb.versions import StagedStore, VersionError
from tests.test_store import (
    ALPHA,
    COLLECTION,
    CORPUS,
    DENSE_QUERY,
    SPARSE_QUERY,
    SPEC,
    axis,
    chunk,
    point,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
]

# alpha rewritten: one chunk, other text, another content hash.
ALPHA_V2 = [
    point(
        chunk("alpha", 0, 1, "Kubernetes autoscaling, rewritten", content_hash="a2", title="N"),
        axis(1, {0: 0.3}),
    )
]


def open_versioned(kind: str, path: Path) -> VersionedStore:
    if kind == "edge":
        return EdgeStore(path / "qdrant")
    return ServerStore(AsyncQdrantClient(path=str(path / "server")))


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VersionedStore]:
    """The test corpus in a collection created the way it was before versions."""
    opened = open_versioned(request.param, tmp_path)
    await opened.ensure_collection(SPEC)
    await opened.upsert(COLLECTION, CORPUS)
    yield opened
    await opened.close()


async def doc_hashes(store: VersionedStore | StagedStore, name: str = COLLECTION) -> set[str]:
    return {f"{d.doc_id}:{d.content_hash}" for d in await store.list_documents(name)}


LIVE_DOCS = {"alpha:a1", "beta:b1", "gamma:g1"}
STAGED_DOCS = {"alpha:a2", "beta:b1", "gamma:g1"}


async def stage_alpha_v2(store: VersionedStore) -> StagedStore:
    """Stage the corpus with alpha replaced, written the way ingestion writes it."""
    await store.stage(COLLECTION)
    staged = StagedStore(store)
    await staged.upsert(COLLECTION, ALPHA_V2)
    await staged.delete_document(COLLECTION, "alpha", keep={ALPHA_V2[0].chunk.point_id})
    return staged


async def test_a_candidate_is_a_copy_of_live_that_users_do_not_see(store: VersionedStore) -> None:
    staged = await stage_alpha_v2(store)
    versions = await store.versions(COLLECTION)
    assert versions is not None
    assert versions.candidate == f"{COLLECTION}@v2"
    # Users (the logical name) still read live; the candidate has live plus the change.
    assert await doc_hashes(store) == LIVE_DOCS
    assert await doc_hashes(staged) == STAGED_DOCS
    # The view keeps the logical name: specs, chunks and citations never show a version.
    spec = await staged.get_collection(COLLECTION)
    assert spec is not None
    assert spec.name == COLLECTION
    found = await staged.candidates(COLLECTION, DENSE_QUERY, SPARSE_QUERY, 3)
    chunks = await staged.fetch(COLLECTION, [c.point_id for c in found])
    assert {c.collection for c in chunks} == {COLLECTION}
    assert "Kubernetes autoscaling, rewritten" in {c.text for c in chunks}
    # A knowledge base is listed once, whatever versions it has.
    assert await store.list_collections() == [COLLECTION]
    # Staging again keeps the candidate and what was staged into it.
    assert (await store.stage(COLLECTION)).candidate == versions.candidate
    assert await doc_hashes(StagedStore(store)) == STAGED_DOCS


async def test_release_switches_and_rollback_switches_back(store: VersionedStore) -> None:
    await stage_alpha_v2(store)
    after = await store.release(COLLECTION)
    assert after.live == f"{COLLECTION}@v2"
    assert after.candidate is None
    assert after.previous is not None
    assert await doc_hashes(store) == STAGED_DOCS
    assert await store.list_collections() == [COLLECTION]

    back = await store.rollback(COLLECTION)
    assert back.live == after.previous
    assert await doc_hashes(store) == LIVE_DOCS
    # The undone version waits as the candidate: it can be fixed and released again.
    assert back.candidate == f"{COLLECTION}@v2"
    assert await doc_hashes(StagedStore(store)) == STAGED_DOCS
    again = await store.release(COLLECTION)
    assert again.live == f"{COLLECTION}@v2"
    assert await doc_hashes(store) == STAGED_DOCS


async def test_two_releases_keep_one_previous_version(store: VersionedStore) -> None:
    await stage_alpha_v2(store)
    first = await store.release(COLLECTION)
    staged = StagedStore(store)
    await store.stage(COLLECTION)
    await staged.delete_document(COLLECTION, "gamma")
    second = await store.release(COLLECTION)
    assert second.live == f"{COLLECTION}@v3"
    assert second.previous == first.live
    # The version before the previous one is gone: only live and previous remain (any other
    # version would be listed as a candidate or as stale).
    assert await store.versions(COLLECTION) == second
    assert second.stale == ()
    assert second.candidate is None
    assert await doc_hashes(store) == {"alpha:a2", "beta:b1"}
    assert await doc_hashes(store, first.live) == STAGED_DOCS


async def test_nothing_to_release_or_roll_back_is_a_clear_error(store: VersionedStore) -> None:
    with pytest.raises(VersionError, match="no candidate to release"):
        await store.release(COLLECTION)
    with pytest.raises(VersionError, match="no previous version"):
        await store.rollback(COLLECTION)
    with pytest.raises(CollectionNotFoundError):
        await store.stage("missing")
    assert await store.versions("missing") is None


async def test_a_discarded_candidate_is_gone(store: VersionedStore) -> None:
    await stage_alpha_v2(store)
    after = await store.discard(COLLECTION)
    assert after.candidate is None
    assert await store.get_collection(f"{COLLECTION}@v2") is None
    assert await doc_hashes(StagedStore(store)) == LIVE_DOCS


async def test_versions_survive_a_restart(tmp_path: Path) -> None:
    for kind in ("edge", "server"):
        store = open_versioned(kind, tmp_path / kind)
        await store.ensure_collection(SPEC)
        await store.upsert(COLLECTION, CORPUS)
        await stage_alpha_v2(store)
        released = await store.release(COLLECTION)
        await store.close()
        reopened = open_versioned(kind, tmp_path / kind)
        try:
            assert await reopened.versions(COLLECTION) == released, kind
            assert await doc_hashes(reopened) == STAGED_DOCS, kind
        finally:
            await reopened.close()


async def test_the_server_migrates_an_old_collection_to_an_alias(tmp_path: Path) -> None:
    client = AsyncQdrantClient(path=str(tmp_path / "server"))
    store = ServerStore(client)
    try:
        await store.ensure_collection(SPEC)
        await store.upsert(COLLECTION, CORPUS)
        await store.stage(COLLECTION)
        # The physical collection became version 1 behind an alias of its name.
        aliases = (await client.get_aliases()).aliases
        assert [(a.alias_name, a.collection_name) for a in aliases] == [
            (COLLECTION, f"{COLLECTION}@v1")
        ]
        names = {c.name for c in (await client.get_collections()).collections}
        assert names == {f"{COLLECTION}@v1", f"{COLLECTION}@v2"}
        assert await doc_hashes(store) == LIVE_DOCS
        assert await doc_hashes(StagedStore(store)) == LIVE_DOCS
    finally:
        await store.close()


async def test_an_interrupted_server_copy_is_not_a_candidate(tmp_path: Path) -> None:
    store = ServerStore(AsyncQdrantClient(path=str(tmp_path / "server")))
    try:
        await store.ensure_collection(SPEC)
        await store.upsert(COLLECTION, CORPUS)
        await store.stage(COLLECTION)
        await store.discard(COLLECTION)
        # A copy cut short: created, some points, no spec yet.
        await store._create(replace(SPEC, name="docs@v2"), {"kb_copy_of": COLLECTION})
        versions = await store.versions(COLLECTION)
        assert versions is not None
        assert versions.candidate is None
        assert versions.stale == ("docs@v2",)
        staged = await store.stage(COLLECTION)
        assert staged.candidate == "docs@v3"
        assert staged.stale == ()
        assert await doc_hashes(StagedStore(store)) == LIVE_DOCS
    finally:
        await store.close()


async def test_an_interrupted_edge_copy_leaves_nothing(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    await store.ensure_collection(SPEC)
    await store.upsert(COLLECTION, CORPUS)
    await store.close()
    # What a crash in the middle of a copy leaves: a folder under a temporary name.
    (tmp_path / "qdrant" / f".creating-{COLLECTION}@v1-0000").mkdir()
    store = EdgeStore(tmp_path / "qdrant")
    try:
        versions = await store.versions(COLLECTION)
        assert versions is not None
        assert versions.candidate is None
        assert not list((tmp_path / "qdrant").glob(".creating-*"))
    finally:
        await store.close()


async def test_an_edge_copy_stays_small(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    try:
        await store.ensure_collection(SPEC)
        await store.upsert(COLLECTION, CORPUS)
        await store.stage(COLLECTION)
    finally:
        await store.close()

    def used(folder: Path) -> int:
        return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())

    live, copy = tmp_path / "qdrant" / COLLECTION, tmp_path / "qdrant" / f"{COLLECTION}@v1"
    # The shard's files are preallocated and mostly holes: a byte copy takes 200 MB.
    assert used(copy) <= used(live) * 1.5 + 65536


async def test_searches_during_releases_read_one_whole_version(store: VersionedStore) -> None:
    """Each search sees either live (alpha in three chunks, hash a1) or the candidate (alpha
    in one chunk, hash a2), never a mix and never nothing, while releases and rollbacks
    switch between them."""
    await stage_alpha_v2(store)
    seen: set[frozenset[str]] = set()
    stop = asyncio.Event()

    async def search() -> None:
        while not stop.is_set():
            found = await store.candidates(COLLECTION, DENSE_QUERY, SPARSE_QUERY, 10)
            chunks = await store.fetch(COLLECTION, [c.point_id for c in found])
            alpha = frozenset(c.content_hash for c in chunks if c.doc_id == "alpha")
            seen.add(alpha)
            count = len([c for c in chunks if c.doc_id == "alpha"])
            assert (alpha, count) in {(frozenset({"a1"}), len(ALPHA)), (frozenset({"a2"}), 1)}
            await asyncio.sleep(0)

    searchers = [asyncio.create_task(search()) for _ in range(4)]
    try:
        for _ in range(5):
            await store.release(COLLECTION)
            await asyncio.sleep(0.01)
            await store.rollback(COLLECTION)
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.gather(*searchers)
    assert seen == {frozenset({"a1"}), frozenset({"a2"})}
