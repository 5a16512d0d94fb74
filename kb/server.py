"""Server adapter: a Qdrant server (or qdrant-client's local mode) through AsyncQdrantClient."""

import logging
import math
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from kb.errors import CollectionMismatchError, CollectionNotFoundError, StoreUnavailableError
from kb.schema import Candidate, Chunk, ChunkVectors, CollectionSpec, DocumentInfo, SparseVector
from kb.settings import QdrantSettings
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
    version_name,
    version_number,
)

log = logging.getLogger(__name__)
# Key of the spec inside the collection's metadata, namespaced so other tools' keys can coexist.
SPEC_METADATA_KEY = "kb_spec"
# Bounded request bodies: a large document's points go in several requests.
UPSERT_BATCH = 256
_SCROLL_PAGE = 1000
_HTTP_NOT_FOUND = 404
_HTTP_CONFLICT = 409


def doc_filter(
    doc_ids: Sequence[str] | None = None, doc_id: str | None = None
) -> models.Filter | None:
    """A filter on document ids, or None for no filter."""
    if doc_id is not None:
        return models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))]
        )
    if doc_ids is not None:
        return models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))]
        )
    return None


class ServerStore:
    """Collections on a Qdrant server; the collection spec lives in the collection's metadata."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        shard_number: int = 1,
        replication_factor: int = 1,
        url: str = "local mode",
    ) -> None:
        self._client = client
        self._url = url
        self._shard_number = shard_number
        self._replication_factor = replication_factor

    @classmethod
    def from_settings(cls, settings: QdrantSettings) -> "ServerStore":
        """A store on the server at settings.url (QDRANT_URL)."""
        if settings.url is None:
            raise ValueError("QDRANT_URL is not set: the server store needs a Qdrant server URL")
        client = AsyncQdrantClient(
            url=settings.url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            # The client takes whole seconds; round up so a short timeout never becomes 0.
            timeout=math.ceil(settings.timeout_s),
        )
        return cls(
            client,
            shard_number=settings.shard_number,
            replication_factor=settings.replication_factor,
            url=settings.url,
        )

    async def _is_missing(self, exc: Exception, name: str) -> bool:
        if isinstance(exc, UnexpectedResponse):
            return exc.status_code == _HTTP_NOT_FOUND
        # Local mode raises a bare ValueError for a missing collection: ask rather than
        # parse its message.
        return not await self._client.collection_exists(name)

    @asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        """A server that cannot be reached becomes one clear error, not a client traceback."""
        try:
            yield
        except ResponseHandlingException as exc:
            raise StoreUnavailableError(
                f"cannot reach the Qdrant server at {self._url}: {exc.source}. Check that it "
                "runs and that QDRANT_URL / QDRANT_API_KEY are right."
            ) from exc

    @asynccontextmanager
    async def _existing(self, name: str) -> AsyncIterator[None]:
        """Run a collection operation; the client's 'no such collection' becomes ours."""
        validate_store_name(name)
        try:
            async with self._reachable():
                yield
        except (UnexpectedResponse, ValueError) as exc:
            if await self._is_missing(exc, name):
                raise CollectionNotFoundError(f"collection {name!r} does not exist") from exc
            raise

    async def _info(self, name: str) -> models.CollectionInfo | None:
        try:
            async with self._existing(name):
                return await self._client.get_collection(name)
        except CollectionNotFoundError:
            return None

    @staticmethod
    def _spec_from_info(name: str, info: models.CollectionInfo) -> CollectionSpec:
        stored = (info.config.metadata or {}).get(SPEC_METADATA_KEY)
        try:
            return spec_from_dict(name, stored if isinstance(stored, dict) else {})
        except KeyError:
            raise CollectionMismatchError(
                f"collection {name!r} exists but has no knowledge-base spec in its metadata: "
                "it was not created by this tool (or the Qdrant server is older than 1.16, "
                "which has no collection metadata). Use another collection name."
            ) from None

    async def _create_indexes(self, name: str, fields: Sequence[str]) -> None:
        for key in fields:
            await self._client.create_payload_index(
                name, field_name=key, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
            )

    async def ensure_collection(self, spec: CollectionSpec) -> CollectionSpec:
        """Create the collection if missing; return the stored spec (which wins if it exists)."""
        validate_store_name(spec.name)
        info = await self._info(spec.name)
        if info is not None:
            existing = self._spec_from_info(spec.name, info)
            check_compatible(existing, spec)
            # Self-heals a creation interrupted before its indexes: the spec is written with
            # the collection itself, the indexes only after it.
            missing = [key for key in INDEXED_KEYWORDS if key not in info.payload_schema]
            await self._create_indexes(spec.name, missing)
            return existing
        try:
            await self._create(spec, {SPEC_METADATA_KEY: _stored_spec(spec)})
        except UnexpectedResponse as exc:
            if exc.status_code != _HTTP_CONFLICT:
                raise
            # Another process created it between our look and our create: its spec wins.
            return await self.ensure_collection(spec)
        return spec

    async def _create(self, spec: CollectionSpec, metadata: dict[str, Any]) -> None:
        """A new physical collection for spec.name, with its payload indexes."""
        await self._client.create_collection(
            spec.name,
            vectors_config={
                name: models.VectorParams(size=spec.dense_size, distance=models.Distance.COSINE)
                for name in (DENSE, DOC)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            shard_number=self._shard_number,
            replication_factor=self._replication_factor,
            metadata=metadata,
        )
        await self._create_indexes(spec.name, INDEXED_KEYWORDS)

    async def update_collection(self, spec: CollectionSpec) -> None:
        """Rewrite the spec in the collection's metadata."""
        async with self._existing(spec.name):
            await self._client.update_collection(
                spec.name, metadata={SPEC_METADATA_KEY: _stored_spec(spec)}
            )

    async def get_collection(self, name: str) -> CollectionSpec | None:
        """The collection's spec (from its metadata), or None when it does not exist."""
        info = await self._info(name)
        return None if info is None else self._spec_from_info(name, info)

    async def list_collections(self) -> list[str]:
        """Names of all collections on the server, sorted: a knowledge base with versions
        by its alias, never its versions."""
        async with self._reachable():
            response = await self._client.get_collections()
            aliases = await self._aliases()
        names = {c.name for c in response.collections if SEPARATOR not in c.name}
        return sorted(names | set(aliases))

    async def _aliases(self) -> dict[str, str]:
        """Knowledge base -> its live version, for every alias of ours (NAME -> NAME@vN)."""
        response = await self._client.get_aliases()
        return {
            a.alias_name: a.collection_name
            for a in response.aliases
            if version_number(a.alias_name, a.collection_name)
        }

    async def upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        """Insert or overwrite points, UPSERT_BATCH per request, each acknowledged when applied."""
        async with self._existing(collection):
            for start in range(0, len(points), UPSERT_BATCH):
                batch = [
                    models.PointStruct(
                        id=p.chunk.point_id,
                        vector={
                            DENSE: list(p.dense),
                            DOC: list(p.doc),
                            SPARSE: models.SparseVector(
                                indices=list(p.sparse.indices), values=list(p.sparse.values)
                            ),
                        },
                        payload=p.chunk.to_payload(),
                    )
                    for p in points[start : start + UPSERT_BATCH]
                ]
                await self._client.upsert(collection, points=batch, wait=True)

    async def delete_document(
        self, collection: str, doc_id: str, keep: Collection[str] | None = None
    ) -> int:
        """Delete a document's points, except those whose ids are in keep; return how many."""
        must_not: list[models.Condition] = []
        if keep:
            must_not.append(models.HasIdCondition(has_id=list(keep)))
        flt = models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))],
            must_not=must_not or None,
        )
        async with self._existing(collection):
            count = (await self._client.count(collection, count_filter=flt, exact=True)).count
            if count:
                await self._client.delete(
                    collection, points_selector=models.FilterSelector(filter=flt), wait=True
                )
        return count

    async def _pages(
        self,
        collection: str,
        flt: models.Filter | None,
        *,
        payload: bool | list[str],
        vectors: bool,
        page: int = _SCROLL_PAGE,
    ) -> AsyncIterator[list[models.Record]]:
        """Every point the filter selects, a page at a time."""
        offset: models.ExtendedPointId | None = None
        while True:
            records, offset = await self._client.scroll(
                collection,
                scroll_filter=flt,
                limit=page,
                offset=offset,
                with_payload=payload,
                with_vectors=vectors,
            )
            yield records
            if offset is None:
                return

    async def _scroll_payloads(
        self, collection: str, flt: models.Filter | None
    ) -> list[dict[str, Any]]:
        async with self._existing(collection):
            pages = self._pages(collection, flt, payload=list(DOCUMENT_FIELDS), vectors=False)
            return [r.payload or {} async for records in pages for r in records]

    async def document_versions(self, collection: str, doc_id: str) -> list[DocumentInfo]:
        """Each stored version (content hash) of a document, with how many chunks it has."""
        return collect_documents(await self._scroll_payloads(collection, doc_filter(doc_id=doc_id)))

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        """The documents of a collection, sorted by id (one entry per stored version)."""
        return collect_documents(await self._scroll_payloads(collection, None))

    async def rekey_document(
        self, collection: str, doc_id: str, new_doc_id: str, fields: Mapping[str, Any]
    ) -> int:
        """Move a document's points, vectors included, to another doc id; the new points are
        written before the old go. Returns how many moved."""
        flt = models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))]
        )
        moved: list[models.PointStruct] = []
        async with self._existing(collection):
            async for records in self._pages(collection, flt, payload=True, vectors=True):
                for record in records:
                    # Point ids hash the logical name (a staged version's chunks keep it).
                    new_id, payload = rekeyed_payload(
                        logical_name(collection), record.payload or {}, new_doc_id, fields
                    )
                    vector: Any = record.vector
                    moved.append(models.PointStruct(id=new_id, vector=vector, payload=payload))
            for start in range(0, len(moved), UPSERT_BATCH):
                batch = moved[start : start + UPSERT_BATCH]
                await self._client.upsert(collection, points=batch, wait=True)
            if moved:
                await self._client.delete(
                    collection, points_selector=models.FilterSelector(filter=flt), wait=True
                )
        return len(moved)

    async def set_document_fields(
        self, collection: str, doc_ids: Sequence[str], fields: Mapping[str, Any]
    ) -> None:
        """Set payload fields on every point of these documents."""
        if not doc_ids:
            return
        async with self._existing(collection):
            await self._client.set_payload(
                collection,
                payload=dict(fields),
                points=models.FilterSelector(
                    filter=models.Filter(
                        must=[
                            models.FieldCondition(
                                key="doc_id", match=models.MatchAny(any=list(doc_ids))
                            )
                        ]
                    )
                ),
                wait=True,
            )

    async def candidates(
        self,
        collection: str,
        dense: Sequence[float],
        sparse: SparseVector,
        limit: int,
        doc_ids: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """Dense and BM25 candidates with all their scores: two batched requests, no payloads
        or vectors on the wire (those are fetched for the winners only)."""
        flt = doc_filter(doc_ids=doc_ids)
        sparse_query = models.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
        signals: list[tuple[list[float] | models.SparseVector, str]] = [
            (list(dense), DENSE),
            (list(dense), DOC),
            (sparse_query, SPARSE),
        ]
        async with self._existing(collection):
            first = await self._client.query_batch_points(
                collection,
                requests=[
                    models.QueryRequest(query=q, using=u, filter=flt, limit=limit)
                    for q, u in (signals[0], signals[2])
                ],
            )
            ids = list(dict.fromkeys(str(p.id) for r in first for p in r.points))
            if not ids:
                return []
            only = models.Filter(must=[models.HasIdCondition(has_id=list(ids))])
            second = await self._client.query_batch_points(
                collection,
                requests=[
                    models.QueryRequest(query=q, using=u, filter=only, limit=len(ids))
                    for q, u in signals
                ],
            )
        return merge_candidates(ids, [{str(p.id): p.score for p in r.points} for r in second])

    async def fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        """Chunks by point id, in the order asked."""
        if not point_ids:
            return []
        by_id = await self._retrieve(collection, point_ids)
        missing = [i for i in point_ids if i not in by_id]
        if missing and SEPARATOR not in collection:
            # A release between a search's candidates and this fetch: the ids are in the
            # version the candidates came from (ids are content hashes: same chunk, same id).
            versions = await self.versions(collection)
            for other in (versions.previous, versions.candidate) if versions else ():
                if other is not None and missing:
                    by_id |= await self._retrieve(other, missing)
                    missing = [i for i in missing if i not in by_id]
        return [by_id[i] for i in point_ids if i in by_id]

    async def _retrieve(self, collection: str, point_ids: Sequence[str]) -> dict[str, Chunk]:
        async with self._existing(collection):
            records = await self._client.retrieve(
                collection, ids=list(point_ids), with_payload=True, with_vectors=False
            )
        return {str(r.id): Chunk.from_payload(r.payload or {}) for r in records}

    async def versions(self, name: str) -> Versions | None:
        """The live version (the alias's target, or the collection of that name before its
        first stage), the candidate and the previous one. A copy that did not finish (no
        spec in its metadata yet) is stale."""
        validate_store_name(name)
        async with self._reachable():
            live = (await self._aliases()).get(name)
            collections = (await self._client.get_collections()).collections
        found = [c.name for c in collections if version_number(name, c.name) is not None]
        if live is None:
            if name not in found:
                return None
            live = name
        unfinished = []
        for physical in found:
            info = await self._info(physical)
            if info is None or SPEC_METADATA_KEY not in (info.config.metadata or {}):
                unfinished.append(physical)
        versions = arrange(name, [p for p in found if p not in unfinished], live)
        return replace(versions, stale=versions.stale + tuple(unfinished))

    async def _existing_versions(self, name: str) -> Versions:
        versions = await self.versions(name)
        if versions is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return versions

    async def _copy(self, source: str, target: str) -> None:
        """A new collection filled from another, vectors included (scroll and upsert: the
        server copies nothing by itself since init_from went); its spec is written last, so
        an interrupted copy is known as one."""
        spec = await self.get_collection(source)
        assert spec is not None
        await self._create(replace(spec, name=target), {"kb_copy_of": source})
        async with self._existing(source):
            pages = self._pages(source, None, payload=True, vectors=True, page=UPSERT_BATCH)
            async for records in pages:
                # Named dense and sparse vectors, as stored: the client's read type is
                # narrower than its write type.
                vectors: list[Any] = [r.vector or {} for r in records]
                points = [
                    models.PointStruct(id=r.id, vector=v, payload=r.payload)
                    for r, v in zip(records, vectors, strict=True)
                ]
                if points:
                    await self._client.upsert(target, points=points, wait=True)
        await self._client.update_collection(
            target, metadata={SPEC_METADATA_KEY: _stored_spec(spec)}
        )

    async def _migrate(self, name: str) -> None:
        """A collection created before versions becomes NAME@v1 behind an alias NAME: Qdrant
        refuses an alias with a collection's name, so the collection is copied, deleted and
        the alias created; requests in the moment between the last two fail as 'does not
        exist' (milliseconds: stage such a collection when the bot is quiet)."""
        first = version_name(name, 1)
        await self._client.delete_collection(first)  # what an interrupted migration left
        await self._copy(name, first)
        await self._client.delete_collection(name)
        await self._client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=first, alias_name=name)
                )
            ]
        )
        log.warning("collection %s is now version %s behind the alias %s", name, first, name)

    async def stage(self, name: str) -> Versions:
        """A candidate filled from the live version (an existing candidate is kept)."""
        versions = await self._existing_versions(name)
        if versions.candidate is not None:
            return versions
        if versions.live == name:
            await self._migrate(name)
            versions = await self._existing_versions(name)
        for physical in versions.stale:
            await self._client.delete_collection(physical)
        await self._copy(versions.live, versions.next_version)
        return await self._existing_versions(name)

    async def _point(self, name: str, versions: Versions, after: Versions) -> None:
        """Move the alias in one request (Qdrant applies alias changes atomically)."""
        if versions.live == name:
            raise VersionError(f"collection {name!r} has no alias: stage it first")
        await self._client.update_collection_aliases(
            change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name)),
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=after.live, alias_name=name)
                ),
            ]
        )

    async def release(self, name: str) -> Versions:
        """Point the alias at the candidate; delete the version before the old live one."""
        return await self._switch(name, released)

    async def rollback(self, name: str) -> Versions:
        """Point the alias back at the previous version."""
        return await self._switch(name, rolled_back)

    async def _switch(
        self, name: str, plan: Callable[[Versions], tuple[Versions, list[str]]]
    ) -> Versions:
        """Move the alias as the plan says, then delete the versions it leaves behind."""
        async with self._reachable():
            versions = await self._existing_versions(name)
            after, doomed = plan(versions)
            await self._point(name, versions, after)
            for physical in doomed:
                await self._client.delete_collection(physical)
        return after

    async def discard(self, name: str) -> Versions:
        """Delete the candidate."""
        async with self._reachable():
            versions = await self._existing_versions(name)
            if versions.candidate is None:
                raise VersionError(f"collection {name!r} has no candidate")
            await self._client.delete_collection(versions.candidate)
        return replace(versions, candidate=None)

    async def close(self) -> None:
        """Close the client's connections (or local-mode storage)."""
        await self._client.close()


def _stored_spec(spec: CollectionSpec) -> dict[str, object]:
    return {k: v for k, v in spec_to_dict(spec).items() if k != "name"}
