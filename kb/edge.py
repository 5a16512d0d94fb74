"""Embedded adapter: Qdrant Edge shards in process, one shard folder per collection."""

import asyncio
import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import IO, Any

import qdrant_edge as qe

from kb.errors import CollectionNotFoundError, StoreLockedError
from kb.schema import Candidate, Chunk, ChunkVectors, CollectionSpec, DocumentInfo, SparseVector
from kb.store import (
    DENSE,
    DOC,
    DOCUMENT_FIELDS,
    INDEXED_KEYWORDS,
    SPARSE,
    check_compatible,
    collect_documents,
    merge_candidates,
    spec_from_dict,
    spec_to_dict,
    validate_collection_name,
)

log = logging.getLogger(__name__)
_SPEC_FILE = "collection.json"
# Prefix of a collection folder being created (not a valid collection name: never listed).
_BUILDING = ".creating-"
_SCROLL_PAGE = 1000
# One search thread: a knowledge base's shard is searched in about a millisecond, and the
# process's cores are better left to the embedding model (measured: no latency difference).
SEARCH_THREADS = 1


def doc_filter(doc_ids: Sequence[str] | None = None, doc_id: str | None = None) -> qe.Filter | None:
    """A filter on document ids, or None for no filter."""
    if doc_id is not None:
        return qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchValue(value=doc_id))])
    if doc_ids is not None:
        return qe.Filter(
            must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(any=list(doc_ids)))]
        )
    return None


def _shard_config(spec: CollectionSpec) -> qe.EdgeConfig:
    """The shard layout of a collection: chunk and document vectors, BM25 with IDF."""
    return qe.EdgeConfig(
        vectors={
            name: qe.EdgeVectorParams(size=spec.dense_size, distance=qe.Distance.Cosine)
            for name in (DENSE, DOC)
        },
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        max_search_threads=SEARCH_THREADS,
    )


class EdgeStore:
    """Qdrant Edge under one folder; the folder is locked so only one process writes it."""

    def __init__(self, path: Path) -> None:
        self._root = path
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_lock(path)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._specs: dict[str, CollectionSpec] = {}
        # Edge shards are thread-safe for reads; writes and shard opening are serialised.
        self._write_lock = threading.Lock()
        self._clean_unfinished()

    @staticmethod
    def _acquire_lock(path: Path) -> IO[str]:
        handle = (path / ".lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLockedError(
                f"the embedded Qdrant store at {path} is in use by another process "
                "(the bot, or another ingestion run). Stop that process first, or run "
                "Qdrant as a server and set QDRANT_URL so several processes can share it."
            ) from None
        return handle

    def _open(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        with self._write_lock:
            if name not in self._shards:
                spec = self._read_spec(name)
                if spec is None:
                    raise CollectionNotFoundError(f"collection {name!r} does not exist")
                # This Edge build refuses an EdgeConfig without vectors, even to load a shard:
                # pass the full config (also checked against the shard's own).
                self._shards[name] = qe.EdgeShard.load(
                    str(self._root / name / "shard"), _shard_config(spec)
                )
            return self._shards[name]

    def _read_spec(self, name: str) -> CollectionSpec | None:
        # The name becomes a path under the root: reject it before touching the disk.
        validate_collection_name(name)
        if name in self._specs:
            return self._specs[name]
        spec_path = self._root / name / _SPEC_FILE
        if not spec_path.is_file():
            return None
        spec = spec_from_dict(name, json.loads(spec_path.read_text(encoding="utf-8")))
        self._specs[name] = spec
        return spec

    def _ensure(self, spec: CollectionSpec) -> CollectionSpec:
        validate_collection_name(spec.name)
        with self._write_lock:
            existing = self._read_spec(spec.name)
            if existing is not None:
                check_compatible(existing, spec)
                return existing
            folder = self._root / spec.name
            if folder.exists():
                # A creation interrupted before this change (no spec, so never written to).
                log.warning("removing the unfinished collection folder %s", folder)
                shutil.rmtree(folder)
            # Built aside and renamed into place: a crash at any moment leaves either no
            # collection or a complete one, never a folder that blocks the next attempt.
            building = self._root / f"{_BUILDING}{spec.name}-{uuid.uuid4().hex[:8]}"
            shard = qe.EdgeShard.create(str(building / "shard"), _shard_config(spec))
            for key in INDEXED_KEYWORDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword)
                )
            shard.flush()
            shard.close()
            self._write_spec(spec, building)
            os.rename(building, folder)
            self._shards[spec.name] = qe.EdgeShard.load(str(folder / "shard"), _shard_config(spec))
            return spec

    def _clean_unfinished(self) -> None:
        """Remove what interrupted creations left (the folder lock is held: nobody else is
        creating a collection here)."""
        for leftover in self._root.glob(f"{_BUILDING}*"):
            log.warning("removing the unfinished collection folder %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)

    async def ensure_collection(self, spec: CollectionSpec) -> CollectionSpec:
        """Create the collection's shard if missing; return the stored spec."""
        return await asyncio.to_thread(self._ensure, spec)

    async def get_collection(self, name: str) -> CollectionSpec | None:
        """The collection's spec, or None."""
        return await asyncio.to_thread(self._read_spec, name)

    def _write_spec(self, spec: CollectionSpec, folder: Path | None = None) -> None:
        folder = folder or self._root / spec.name
        tmp = folder / f"{_SPEC_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(spec_to_dict(spec)), encoding="utf-8")
        tmp.replace(folder / _SPEC_FILE)
        self._specs[spec.name] = spec

    async def update_collection(self, spec: CollectionSpec) -> None:
        """Rewrite the collection's spec file (atomically)."""
        if await self.get_collection(spec.name) is None:
            raise CollectionNotFoundError(f"collection {spec.name!r} does not exist")
        await asyncio.to_thread(self._write_spec, spec)

    async def list_collections(self) -> list[str]:
        """Collections are the sub-folders that carry a spec file."""
        return sorted(
            p.parent.name
            for p in self._root.glob(f"*/{_SPEC_FILE}")
            if not p.parent.name.startswith(".")
        )

    def _upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        shard = self._open(collection)
        edge_points = [
            qe.Point(
                id=p.chunk.point_id,
                vector={
                    DENSE: list(p.dense),
                    DOC: list(p.doc),
                    SPARSE: qe.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=p.chunk.to_payload(),
            )
            for p in points
        ]
        with self._write_lock:
            shard.update(qe.UpdateOperation.upsert_points(edge_points))

    async def upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        """Insert or overwrite points."""
        if points:
            await asyncio.to_thread(self._upsert, collection, points)

    def _delete(self, collection: str, doc_id: str, keep: Collection[str] | None) -> int:
        shard = self._open(collection)
        must: list[Any] = [qe.FieldCondition(key="doc_id", match=qe.MatchValue(value=doc_id))]
        must_not: list[Any] = []
        if keep:
            must_not.append(qe.HasIdCondition(point_ids=set[int | uuid.UUID | str](keep)))
        flt = qe.Filter(must=must, must_not=must_not or None)
        with self._write_lock:
            count = shard.count(qe.CountRequest(filter=flt, exact=True))
            if count:
                shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return count

    async def delete_document(
        self, collection: str, doc_id: str, keep: Collection[str] | None = None
    ) -> int:
        """Delete a document's points, except those whose ids are in keep."""
        return await asyncio.to_thread(self._delete, collection, doc_id, keep)

    def _scroll_payloads(self, collection: str, flt: qe.Filter | None) -> list[dict[str, Any]]:
        shard = self._open(collection)
        payloads: list[dict[str, Any]] = []
        offset = None
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=_SCROLL_PAGE,
                    filter=flt,
                    with_payload=qe.PayloadSelector.Include(DOCUMENT_FIELDS),
                    with_vector=False,
                )
            )
            payloads.extend(r.payload or {} for r in records)
            if offset is None:
                return payloads

    async def document_versions(self, collection: str, doc_id: str) -> list[DocumentInfo]:
        """Each stored version of one document."""
        payloads = await asyncio.to_thread(
            self._scroll_payloads, collection, doc_filter(doc_id=doc_id)
        )
        return collect_documents(payloads)

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        """All documents of a collection."""
        return collect_documents(await asyncio.to_thread(self._scroll_payloads, collection, None))

    def _candidates(
        self,
        collection: str,
        dense: Sequence[float],
        sparse: SparseVector,
        limit: int,
        doc_ids: Sequence[str] | None,
    ) -> list[Candidate]:
        shard = self._open(collection)
        flt = doc_filter(doc_ids=doc_ids)
        queries = (
            qe.Query.Nearest(list(dense), using=DENSE),
            qe.Query.Nearest(list(dense), using=DOC),
            qe.Query.Nearest(
                qe.SparseVector(indices=sparse.indices, values=sparse.values), using=SPARSE
            ),
        )
        # Ids and scores only: payloads are fetched for the few chunks that win the fusion.
        first = shard.query_batch(
            qe.QueryBatchRequest(
                queries=[
                    qe.QueryRequest(limit=limit, query=q, filter=flt, with_payload=False)
                    for q in (queries[0], queries[2])
                ]
            )
        )
        ids = list(dict.fromkeys(str(p.id) for hits in first for p in hits))
        if not ids:
            return []
        only = qe.Filter(must=[qe.HasIdCondition(point_ids=set[int | uuid.UUID | str](ids))])
        second = shard.query_batch(
            qe.QueryBatchRequest(
                queries=[
                    qe.QueryRequest(limit=len(ids), query=q, filter=only, with_payload=False)
                    for q in queries
                ]
            )
        )
        return merge_candidates(ids, [{str(p.id): p.score for p in hits} for hits in second])

    async def candidates(
        self,
        collection: str,
        dense: Sequence[float],
        sparse: SparseVector,
        limit: int,
        doc_ids: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """Dense and BM25 candidates with all their scores (two in-process batched queries)."""
        return await asyncio.to_thread(self._candidates, collection, dense, sparse, limit, doc_ids)

    def _fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        records = self._open(collection).retrieve(
            point_ids=list(point_ids), with_payload=True, with_vector=False
        )
        by_id = {str(r.id): Chunk.from_payload(r.payload or {}) for r in records}
        return [by_id[i] for i in point_ids if i in by_id]

    async def fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        """Chunks by point id, in the order asked."""
        if not point_ids:
            return []
        return await asyncio.to_thread(self._fetch, collection, point_ids)

    def close_sync(self) -> None:
        """Flush and close every shard, then release the folder lock."""
        with self._write_lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    async def close(self) -> None:
        """Flush, close and unlock."""
        await asyncio.to_thread(self.close_sync)
