"""Embedded adapter: Qdrant Edge shards in process, one shard folder per collection."""

import asyncio
import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
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
    rekeyed_payload,
    spec_from_dict,
    spec_to_dict,
)
from kb.versions import (
    SEPARATOR,
    VersionError,
    Versions,
    arrange,
    logical_name,
    released,
    rolled_back,
    validate_store_name,
    version_number,
)

log = logging.getLogger(__name__)
_SPEC_FILE = "collection.json"
# Prefix of a collection folder being created (not a valid collection name: never listed).
_BUILDING = ".creating-"
# Prefix of a version folder being deleted: renamed first, so a crash never leaves half of one.
_REMOVING = ".removing-"
# One file per knowledge base that has versions: {"live": "NAME@vN"} (the alias of a server).
_POINTERS = ".versions"
_SCROLL_PAGE = 1000
# One search thread: a knowledge base's shard is searched in about a millisecond, and the
# process's cores are better left to the embedding model (measured: no latency difference).
SEARCH_THREADS = 1
# Edge builds no HNSW graph by itself: until optimize() runs, every search scans all vectors
# (measured: 3 ms at 50k chunks, tens of ms at 1M). A write that leaves this many points, and
# this share of the collection, outside the graph indexes them; small writes stay in the
# appendable segment, which is searched by a scan (cheap below the indexing threshold).
OPTIMIZE_MIN_POINTS = 20_000
OPTIMIZE_SHARE = 0.25


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
            DENSE: qe.EdgeVectorParams(size=spec.dense_size, distance=qe.Distance.Cosine),
            # The document vector is only scored for candidates the others found (an id filter:
            # a scan of those ids), so it gets no graph, which would double the indexing time.
            DOC: qe.EdgeVectorParams(
                size=spec.dense_size,
                distance=qe.Distance.Cosine,
                hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
            ),
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
        # Points written per collection since its last optimize() (not yet in the graph).
        self._unindexed: dict[str, int] = {}
        # Edge shards are thread-safe for reads; writes and shard opening are serialised.
        self._write_lock = threading.Lock()
        self._clean_unfinished()
        self._live = self._read_pointers()

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

    def _resolve(self, name: str) -> str:
        """The physical collection of a name: a version as it is, a knowledge base's live
        version (its own folder until it is first released)."""
        # The name becomes a path under the root: reject it before touching the disk.
        validate_store_name(name)
        return name if SEPARATOR in name else self._live.get(name, name)

    def _open(self, name: str) -> qe.EdgeShard:
        # Resolved once: one operation reads one version, whatever a release does meanwhile.
        return self._open_physical(self._resolve(name), name)

    def _open_physical(self, physical: str, name: str) -> qe.EdgeShard:
        shard = self._shards.get(physical)
        if shard is not None:
            return shard
        with self._write_lock:
            if physical not in self._shards:
                spec = self._spec_of(physical)
                if spec is None:
                    raise CollectionNotFoundError(f"collection {name!r} does not exist")
                # This Edge build refuses an EdgeConfig without vectors, even to load a shard:
                # pass the full config (also checked against the shard's own).
                self._shards[physical] = qe.EdgeShard.load(
                    str(self._root / physical / "shard"), _shard_config(spec)
                )
            return self._shards[physical]

    def _read_spec(self, name: str) -> CollectionSpec | None:
        spec = self._spec_of(self._resolve(name))
        return spec if spec is None or spec.name == name else replace(spec, name=name)

    def _spec_of(self, physical: str) -> CollectionSpec | None:
        """The spec in a physical collection's folder (the legacy folder of a knowledge
        base has its logical name, which _resolve would take to the live version)."""
        spec = self._specs.get(physical)
        if spec is None:
            spec_path = self._root / physical / _SPEC_FILE
            if not spec_path.is_file():
                return None
            data = json.loads(spec_path.read_text(encoding="utf-8"))
            spec = self._specs[physical] = spec_from_dict(physical, data)
        return spec

    def _ensure(self, spec: CollectionSpec) -> CollectionSpec:
        with self._write_lock:
            existing = self._read_spec(spec.name)
            if existing is not None:
                check_compatible(existing, spec)
                return existing
            physical = self._resolve(spec.name)
            folder = self._root / physical
            if folder.exists():
                # A creation interrupted before this change (no spec, so never written to).
                log.warning("removing the unfinished collection folder %s", folder)
                shutil.rmtree(folder)
            # Built aside and renamed into place: a crash at any moment leaves either no
            # collection or a complete one, never a folder that blocks the next attempt.
            building = self._root / f"{_BUILDING}{physical}-{uuid.uuid4().hex[:8]}"
            shard = qe.EdgeShard.create(str(building / "shard"), _shard_config(spec))
            for key in INDEXED_KEYWORDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword)
                )
            shard.flush()
            shard.close()
            self._write_spec(spec, building)
            os.rename(building, folder)
            self._shards[physical] = qe.EdgeShard.load(str(folder / "shard"), _shard_config(spec))
            return spec

    def _clean_unfinished(self) -> None:
        """Remove what interrupted creations left (the folder lock is held: nobody else is
        creating a collection here)."""
        for prefix in (_BUILDING, _REMOVING):
            for leftover in self._root.glob(f"{prefix}*"):
                log.warning("removing the unfinished collection folder %s", leftover)
                shutil.rmtree(leftover, ignore_errors=True)

    async def ensure_collection(self, spec: CollectionSpec) -> CollectionSpec:
        """Create the collection's shard if missing; return the stored spec."""
        return await asyncio.to_thread(self._ensure, spec)

    async def get_collection(self, name: str) -> CollectionSpec | None:
        """The collection's spec, or None."""
        return await asyncio.to_thread(self._read_spec, name)

    def _write_spec(self, spec: CollectionSpec, folder: Path | None = None) -> None:
        physical = self._resolve(spec.name)
        folder = folder or self._root / physical
        tmp = folder / f"{_SPEC_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(spec_to_dict(spec)), encoding="utf-8")
        tmp.replace(folder / _SPEC_FILE)
        self._specs[physical] = replace(spec, name=physical)

    async def update_collection(self, spec: CollectionSpec) -> None:
        """Rewrite the collection's spec file (atomically)."""
        if await self.get_collection(spec.name) is None:
            raise CollectionNotFoundError(f"collection {spec.name!r} does not exist")
        await asyncio.to_thread(self._write_spec, spec)

    async def list_collections(self) -> list[str]:
        """Collections are the sub-folders that carry a spec file (a version's folder counts
        under its knowledge base's name)."""
        folders = {
            p.parent.name
            for p in self._root.glob(f"*/{_SPEC_FILE}")
            if not p.parent.name.startswith(".") and SEPARATOR not in p.parent.name
        }
        return sorted(folders | set(self._live))

    def _upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        collection = self._resolve(collection)  # counted per version, as close_sync looks
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
            unindexed = self._unindexed.get(collection, 0) + len(edge_points)
            self._unindexed[collection] = unindexed
            # Geometric: a collection built by many writes is indexed O(log n) times, not per
            # write, and never holds more than a quarter of its points outside the graph.
            total = shard.info().points_count
            if unindexed >= max(OPTIMIZE_MIN_POINTS, OPTIMIZE_SHARE * total):
                self._optimize_locked(collection, shard)

    def _optimize_locked(self, collection: str, shard: qe.EdgeShard) -> None:
        shard.optimize()
        # The write-ahead log keeps every write until a flush: truncated here, not at close.
        shard.flush()
        self._unindexed[collection] = 0

    def _optimize(self, collection: str) -> None:
        collection = self._resolve(collection)
        shard = self._open(collection)
        with self._write_lock:
            self._optimize_locked(collection, shard)

    async def optimize(self, collection: str) -> None:
        """Index every point written so far (blocking the writes, not the searches)."""
        await asyncio.to_thread(self._optimize, collection)

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

    def _rekey(
        self, collection: str, doc_id: str, new_doc_id: str, fields: Mapping[str, Any]
    ) -> int:
        shard = self._open(collection)
        flt = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchValue(value=doc_id))])
        moved: list[qe.Point] = []
        offset = None
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=_SCROLL_PAGE,
                    filter=flt,
                    with_payload=True,
                    with_vector=True,
                )
            )
            for record in records:
                # Point ids hash the logical name (a staged version's chunks keep it).
                new_id, payload = rekeyed_payload(
                    logical_name(collection), record.payload or {}, new_doc_id, fields
                )
                moved.append(qe.Point(id=new_id, vector=record.vector or {}, payload=payload))
            if offset is None:
                break
        with self._write_lock:
            for start in range(0, len(moved), _SCROLL_PAGE):
                shard.update(qe.UpdateOperation.upsert_points(moved[start : start + _SCROLL_PAGE]))
            if moved:
                shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return len(moved)

    async def rekey_document(
        self, collection: str, doc_id: str, new_doc_id: str, fields: Mapping[str, Any]
    ) -> int:
        """Move a document's points (vectors included) to another doc id."""
        return await asyncio.to_thread(self._rekey, collection, doc_id, new_doc_id, fields)

    def _set_fields(
        self, collection: str, doc_ids: Sequence[str], fields: Mapping[str, Any]
    ) -> None:
        shard = self._open(collection)
        with self._write_lock:
            flt = qe.Filter(
                must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(any=list(doc_ids)))]
            )
            shard.update(qe.UpdateOperation.set_payload_by_filter(flt, dict(fields)))

    async def set_document_fields(
        self, collection: str, doc_ids: Sequence[str], fields: Mapping[str, Any]
    ) -> None:
        """Set payload fields on every point of these documents."""
        if doc_ids:
            await asyncio.to_thread(self._set_fields, collection, doc_ids, fields)

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

    def _retrieve(self, physical: str, point_ids: Sequence[str]) -> dict[str, Chunk]:
        records = self._open_physical(physical, logical_name(physical)).retrieve(
            point_ids=list(point_ids), with_payload=True, with_vector=False
        )
        return {str(r.id): Chunk.from_payload(r.payload or {}) for r in records}

    def _fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        by_id = self._retrieve(self._resolve(collection), point_ids)
        missing = [i for i in point_ids if i not in by_id]
        if missing and SEPARATOR not in collection:
            # A release between a search's candidates and this fetch: the ids are in the
            # version the candidates came from (ids are content hashes: same chunk, same id).
            versions = self._versions(collection)
            for other in (versions.previous, versions.candidate) if versions else ():
                if other is not None and missing:
                    by_id |= self._retrieve(other, missing)
                    missing = [i for i in missing if i not in by_id]
        return [by_id[i] for i in point_ids if i in by_id]

    async def fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        """Chunks by point id, in the order asked."""
        if not point_ids:
            return []
        return await asyncio.to_thread(self._fetch, collection, point_ids)

    def _read_pointers(self) -> dict[str, str]:
        live = {}
        for path in (self._root / _POINTERS).glob("*.json"):
            target = json.loads(path.read_text(encoding="utf-8")).get("live")
            if isinstance(target, str) and version_number(path.stem, target) is not None:
                live[path.stem] = target
        return live

    def _point(self, name: str, physical: str) -> None:
        """Move the name to a version: the pointer file is replaced atomically, then the
        in-memory map (which every operation resolves through, once) follows."""
        folder = self._root / _POINTERS
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump({"live": physical}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / f"{name}.json")
        self._live[name] = physical

    def _versions(self, name: str) -> Versions | None:
        validate_store_name(name)
        live = self._resolve(name)
        if self._spec_of(live) is None:
            return None
        found = [
            p.parent.name
            for p in self._root.glob(f"*/{_SPEC_FILE}")
            if version_number(name, p.parent.name) is not None
        ]
        return arrange(name, found, live)

    def _existing_versions(self, name: str) -> Versions:
        versions = self._versions(name)
        if versions is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return versions

    def _remove(self, physicals: Iterable[str]) -> None:
        """Delete versions nothing points at (the write lock is held)."""
        for physical in physicals:
            shard = self._shards.pop(physical, None)
            if shard is not None:
                shard.close()
            self._specs.pop(physical, None)
            self._unindexed.pop(physical, None)
            folder = self._root / physical
            if folder.exists():
                doomed = self._root / f"{_REMOVING}{physical}-{uuid.uuid4().hex[:8]}"
                os.rename(folder, doomed)
                shutil.rmtree(doomed)

    def _stage(self, name: str) -> Versions:
        with self._write_lock:
            versions = self._existing_versions(name)
            if versions.candidate is not None:
                return versions
            target = versions.next_version
            live = self._shards.get(versions.live)
            if live is not None:
                live.flush()  # the files on disk hold every write (none run: the lock is ours)
            building = self._root / f"{_BUILDING}{target}-{uuid.uuid4().hex[:8]}"
            shutil.copytree(self._root / versions.live, building, copy_function=copy_sparse)
            os.rename(building, self._root / target)
            return self._existing_versions(name)

    async def stage(self, name: str) -> Versions:
        """A candidate as a copy of the live version's folder (sparse files stay sparse),
        built aside and renamed into place; an existing candidate is kept."""
        return await asyncio.to_thread(self._stage, name)

    def _switch(self, name: str, action: str) -> Versions:
        with self._write_lock:
            versions = self._existing_versions(name)
            if action == "discard":
                if versions.candidate is None:
                    raise VersionError(f"collection {name!r} has no candidate")
                self._remove([versions.candidate])
                return self._existing_versions(name)
            after, doomed = (released if action == "release" else rolled_back)(versions)
            self._point(name, after.live)
            self._remove(doomed)
            return after

    async def versions(self, name: str) -> Versions | None:
        """The live, candidate and previous versions of a knowledge base."""
        return await asyncio.to_thread(self._versions, name)

    async def release(self, name: str) -> Versions:
        """Point the name at its candidate; delete the version before the old live one."""
        return await asyncio.to_thread(self._switch, name, "release")

    async def rollback(self, name: str) -> Versions:
        """Point the name back at its previous version."""
        return await asyncio.to_thread(self._switch, name, "rollback")

    async def discard(self, name: str) -> Versions:
        """Delete the candidate."""
        return await asyncio.to_thread(self._switch, name, "discard")

    def close_sync(self) -> None:
        """Flush and close every shard, then release the folder lock."""
        with self._write_lock:
            for name, shard in self._shards.items():
                # An ingestion run ends here: what it wrote is searched through the graph.
                if self._unindexed.get(name):
                    self._optimize_locked(name, shard)
                shard.flush()
                shard.close()
            self._shards.clear()
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    async def close(self) -> None:
        """Flush, close and unlock."""
        await asyncio.to_thread(self.close_sync)


def copy_sparse(source: str, target: str) -> None:
    """Copy a file keeping its holes: a shard's files are mostly preallocated zeros (a
    collection of 300 KB takes 200 MB when copied byte for byte)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(start)
            remaining = end - start
            while remaining:
                block = src.read(min(remaining, 1 << 20))
                dst.write(block)
                remaining -= len(block)
            offset = end
        dst.truncate(size)
    shutil.copystat(source, target)
