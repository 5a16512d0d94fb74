"""Server adapter: a Qdrant server (or qdrant-client's local mode) through AsyncQdrantClient."""

import math
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
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
    spec_from_dict,
    spec_to_dict,
    validate_collection_name,
)

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
        validate_collection_name(name)
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
        validate_collection_name(spec.name)
        info = await self._info(spec.name)
        if info is not None:
            existing = self._spec_from_info(spec.name, info)
            check_compatible(existing, spec)
            # Self-heals a creation interrupted before its indexes: the spec is written with
            # the collection itself, the indexes only after it.
            missing = [key for key in INDEXED_KEYWORDS if key not in info.payload_schema]
            await self._create_indexes(spec.name, missing)
            return existing
        stored = _stored_spec(spec)
        try:
            await self._client.create_collection(
                spec.name,
                vectors_config={
                    name: models.VectorParams(size=spec.dense_size, distance=models.Distance.COSINE)
                    for name in (DENSE, DOC)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                shard_number=self._shard_number,
                replication_factor=self._replication_factor,
                metadata={SPEC_METADATA_KEY: stored},
            )
        except UnexpectedResponse as exc:
            if exc.status_code != _HTTP_CONFLICT:
                raise
            # Another process created it between our look and our create: its spec wins.
            return await self.ensure_collection(spec)
        await self._create_indexes(spec.name, INDEXED_KEYWORDS)
        return spec

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
        """Names of all collections on the server, sorted."""
        async with self._reachable():
            response = await self._client.get_collections()
        return sorted(c.name for c in response.collections)

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

    async def _scroll_payloads(
        self, collection: str, flt: models.Filter | None
    ) -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        offset: models.ExtendedPointId | None = None
        async with self._existing(collection):
            while True:
                records, offset = await self._client.scroll(
                    collection,
                    scroll_filter=flt,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=DOCUMENT_FIELDS,
                    with_vectors=False,
                )
                payloads.extend(r.payload or {} for r in records)
                if offset is None:
                    return payloads

    async def document_versions(self, collection: str, doc_id: str) -> list[DocumentInfo]:
        """Each stored version (content hash) of a document, with how many chunks it has."""
        return collect_documents(await self._scroll_payloads(collection, doc_filter(doc_id=doc_id)))

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        """The documents of a collection, sorted by id (one entry per stored version)."""
        return collect_documents(await self._scroll_payloads(collection, None))

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
        async with self._existing(collection):
            records = await self._client.retrieve(
                collection, ids=list(point_ids), with_payload=True, with_vectors=False
            )
        by_id = {str(r.id): Chunk.from_payload(r.payload or {}) for r in records}
        return [by_id[i] for i in point_ids if i in by_id]

    async def close(self) -> None:
        """Close the client's connections (or local-mode storage)."""
        await self._client.close()


def _stored_spec(spec: CollectionSpec) -> dict[str, object]:
    return {k: v for k, v in spec_to_dict(spec).items() if k != "name"}
