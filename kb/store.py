"""The vector store port: what ingestion and search need from Qdrant, embedded or server."""

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from kb.errors import CollectionMismatchError
from kb.schema import (
    Candidate,
    Chunk,
    ChunkVectors,
    CollectionSpec,
    DocumentInfo,
    SparseVector,
    point_id,
)

if TYPE_CHECKING:
    from kb.versions import Versions

_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
DENSE = "dense"
# The document-level vector: every chunk of a document carries the same one.
DOC = "doc"
SPARSE = "bm25"
# Payload fields that get a keyword index: the filters by document and by version.
INDEXED_KEYWORDS = ("doc_id", "content_hash")
# Only these payload fields are read back when listing documents.
DOCUMENT_FIELDS = ["doc_id", "title", "source", "content_hash", "chunk_count", "ingested_at"]
DOCUMENT_FIELDS += ["synced_from", "source_version", "synced_at"]


class VectorStore(Protocol):
    """One small protocol, two adapters: Qdrant Edge in process, and a Qdrant server."""

    async def ensure_collection(self, spec: CollectionSpec) -> CollectionSpec:
        """Create the collection if missing; return the stored spec (which wins if it exists)."""
        ...

    async def get_collection(self, name: str) -> CollectionSpec | None:
        """The collection's spec, or None when it does not exist."""
        ...

    async def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        ...

    async def update_collection(self, spec: CollectionSpec) -> None:
        """Store a changed spec of an existing collection (its BM25 calibration)."""
        ...

    async def upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        """Insert or overwrite points (keyed by each chunk's deterministic point id)."""
        ...

    async def delete_document(
        self, collection: str, doc_id: str, keep: Collection[str] | None = None
    ) -> int:
        """Delete a document's points, except the points whose ids are in keep (the version
        just written); return how many."""
        ...

    async def document_versions(self, collection: str, doc_id: str) -> list[DocumentInfo]:
        """Each stored version (content hash) of a document, with how many chunks it has."""
        ...

    async def rekey_document(
        self, collection: str, doc_id: str, new_doc_id: str, fields: Mapping[str, Any]
    ) -> int:
        """Move a document's points, vectors included, to another doc id (a renamed file),
        setting payload fields on the way; the new points are written before the old go.
        Returns how many points moved."""
        ...

    async def set_document_fields(
        self, collection: str, doc_ids: Sequence[str], fields: Mapping[str, Any]
    ) -> None:
        """Set payload fields on every point of these documents (what a sync records)."""
        ...

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        """The documents of a collection, sorted by id (one entry per stored version)."""
        ...

    async def candidates(
        self,
        collection: str,
        dense: Sequence[float],
        sparse: SparseVector,
        limit: int,
        doc_ids: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """The union of the dense and the BM25 top-limit chunks, each with all three scores
        (exact, not only from the list that brought it), optionally within some documents."""
        ...

    async def fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        """Chunks by point id, in the order asked (ids no longer stored are left out)."""
        ...

    async def close(self) -> None:
        """Release files, locks and connections."""
        ...


class VersionedStore(VectorStore, Protocol):
    """A store whose knowledge bases have versions (both adapters): every VectorStore method
    takes the logical name (meaning the live version) or a physical version (NAME@vN, see
    kb.versions)."""

    async def versions(self, name: str) -> "Versions | None":
        """The live, candidate and previous physical versions of a knowledge base (None when
        it does not exist)."""
        ...

    async def stage(self, name: str) -> "Versions":
        """A candidate beside the live version, starting as a copy of it (an existing
        candidate is kept, with what was staged into it)."""
        ...

    async def release(self, name: str) -> "Versions":
        """Switch the name to its candidate atomically; the old live version becomes the
        previous one (the one before it is deleted)."""
        ...

    async def rollback(self, name: str) -> "Versions":
        """Switch the name back to its previous version atomically."""
        ...

    async def discard(self, name: str) -> "Versions":
        """Delete the candidate."""
        ...


def collect_documents(payloads: Sequence[dict[str, object]]) -> list[DocumentInfo]:
    """Group point payloads (DOCUMENT_FIELDS) into one DocumentInfo per document version."""
    # A version is a content hash chunked one way: re-chunking the same bytes (--force with
    # other chunk settings) gives another chunk count, and another version.
    groups: dict[tuple[str, str, int], list[dict[str, object]]] = {}
    for payload in payloads:
        key = (
            str(payload["doc_id"]),
            str(payload["content_hash"]),
            int(str(payload["chunk_count"])),
        )
        groups.setdefault(key, []).append(payload)
    infos = []
    for (doc_id, content_hash, _), members in groups.items():
        first = members[0]
        infos.append(
            DocumentInfo(
                doc_id=doc_id,
                title=str(first["title"]),
                source=str(first["source"]),
                content_hash=content_hash,
                chunk_count=int(str(first["chunk_count"])),
                stored_chunks=len(members),
                ingested_at=datetime.fromisoformat(str(first["ingested_at"])),
                synced_from=_optional(first.get("synced_from")),
                source_version=_optional(first.get("source_version")),
                synced_at=_when(first.get("synced_at")),
            )
        )
    return sorted(infos, key=lambda info: (info.doc_id, info.ingested_at))


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _when(value: object) -> datetime | None:
    # The latest sync any chunk of the version saw is on all of them (set together).
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def rekeyed_payload(
    collection: str, payload: Mapping[str, Any], new_doc_id: str, fields: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A point's new id and payload when its document moves to new_doc_id."""
    moved = {**payload, **fields, "doc_id": new_doc_id}
    new_id = point_id(collection, new_doc_id, str(moved["content_hash"]), int(moved["chunk_index"]))
    return new_id, moved


# Collections the project keeps for itself (the knowledge loop's records) start with this.
SYSTEM_PREFIX = "sys-"


def is_system_collection(name: str) -> bool:
    """A collection the project keeps for itself, never a knowledge base."""
    return name.startswith(SYSTEM_PREFIX)


def validate_knowledge_base_name(name: str) -> str:
    """A name a user may give a knowledge base: a valid collection name, not a system one."""
    validate_collection_name(name)
    if is_system_collection(name):
        raise ValueError(
            f"invalid collection name {name!r}: names starting with {SYSTEM_PREFIX!r} are "
            "reserved for the assistant's own records"
        )
    return name


def validate_collection_name(name: str) -> str:
    """Collection names become folder names and URL parts: keep them to a safe alphabet."""
    if not _COLLECTION_NAME.fullmatch(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def spec_to_dict(spec: CollectionSpec) -> dict[str, Any]:
    """A collection spec as JSON-ready data."""
    return {
        "name": spec.name,
        "dense_size": spec.dense_size,
        "embedding_model": spec.embedding_model,
        "language": spec.language,
        "bm25_avg_len": spec.bm25_avg_len,
        "dense_spread": spec.dense_spread,
        "tokens_per_word": spec.tokens_per_word,
        "generation": spec.generation,
    }


def spec_from_dict(name: str, data: Mapping[str, Any]) -> CollectionSpec:
    """A collection spec from what spec_to_dict stored; KeyError when a field is missing."""
    avg_len, spread = data.get("bm25_avg_len"), data.get("dense_spread")
    fertility = data.get("tokens_per_word")
    generation = data.get("generation")
    return CollectionSpec(
        name=name,
        dense_size=int(data["dense_size"]),
        embedding_model=str(data["embedding_model"]),
        language=str(data["language"]),
        bm25_avg_len=float(avg_len) if isinstance(avg_len, int | float) else None,
        dense_spread=float(spread) if isinstance(spread, int | float) else None,
        tokens_per_word=float(fertility) if isinstance(fertility, int | float) else None,
        generation=str(generation) if isinstance(generation, str) else None,
    )


def check_compatible(existing: CollectionSpec, wanted: CollectionSpec) -> None:
    """A collection keeps the model and language it was built with: mixing breaks search."""
    if (existing.dense_size, existing.embedding_model) != (
        wanted.dense_size,
        wanted.embedding_model,
    ):
        raise CollectionMismatchError(
            f"collection {existing.name!r} was built with embedding model "
            f"{existing.embedding_model!r} ({existing.dense_size} dims), not "
            f"{wanted.embedding_model!r} ({wanted.dense_size} dims): use that model, "
            "or ingest into a new collection"
        )
    if existing.language != wanted.language:
        raise CollectionMismatchError(
            f"collection {existing.name!r} uses BM25 language {existing.language!r}, "
            f"not {wanted.language!r}: omit --language, or use a new collection"
        )


def merge_candidates(ids: Sequence[str], scores: Sequence[Mapping[str, float]]) -> list[Candidate]:
    """Candidates with each signal's exact scores from the id-restricted pass (dense,
    document, BM25); a chunk without a query term has BM25 0."""
    dense, doc, sparse = scores
    return [Candidate(i, dense.get(i, 0.0), doc.get(i, 0.0), sparse.get(i, 0.0)) for i in ids]
