"""The chunk schema: what one point in a collection carries, and what search returns."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Fixed namespace so a chunk's point id is the same on every machine and every run.
_POINT_NAMESPACE = uuid.UUID("6f1c2d5e-8a47-4b0e-9d3a-2f6b7c8e9a10")


def point_id(collection: str, doc_id: str, content_hash: str, chunk_index: int) -> str:
    """The point id of one chunk of one document version."""
    key = f"{collection}\x1f{doc_id}\x1f{content_hash}\x1f{chunk_index}"
    return str(uuid.uuid5(_POINT_NAMESPACE, key))


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document, as stored in a collection and cited in answers."""

    doc_id: str
    collection: str
    title: str
    heading_path: tuple[str, ...]
    chunk_index: int
    chunk_count: int
    text: str
    content_hash: str
    ingested_at: datetime
    source: str
    page: int | None = None
    # The original file's id where it was uploaded (a Telegram file_id), to send it back.
    file_id: str | None = None
    # Room for access metadata (readers, owners) without a schema change.
    access: Mapping[str, Any] = field(default_factory=dict)
    # Where a synced document came from: the source's label, the version the source gave it
    # (a hash, an ETag, a page version), when a sync last found it current, and what the
    # source said about it (author, space). None on documents added by hand.
    synced_from: str | None = None
    source_version: str | None = None
    synced_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def point_id(self) -> str:
        """Deterministic id: the same document version always maps to the same points."""
        return point_id(self.collection, self.doc_id, self.content_hash, self.chunk_index)

    def context_line(self) -> str:
        """Title and heading path, the context a chunk is embedded and cited with."""
        parts = [self.title, *(h for h in self.heading_path if h != self.title)]
        return " > ".join(p for p in parts if p)

    def embedding_text(self) -> str:
        """The text the dense and sparse vectors are computed from."""
        context = self.context_line()
        return f"{context}\n{self.text}" if context else self.text

    def to_payload(self) -> dict[str, Any]:
        """Payload for Qdrant: plain JSON types only."""
        return {
            "doc_id": self.doc_id,
            "collection": self.collection,
            "title": self.title,
            "heading_path": list(self.heading_path),
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "text": self.text,
            "content_hash": self.content_hash,
            "ingested_at": self.ingested_at.isoformat(),
            "source": self.source,
            "page": self.page,
            "file_id": self.file_id,
            "access": dict(self.access),
            "synced_from": self.synced_from,
            "source_version": self.source_version,
            "synced_at": self.synced_at.isoformat() if self.synced_at else None,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "Chunk":
        """Rebuild a chunk from a stored payload."""
        return cls(
            doc_id=payload["doc_id"],
            collection=payload["collection"],
            title=payload["title"],
            heading_path=tuple(payload.get("heading_path") or ()),
            chunk_index=int(payload["chunk_index"]),
            chunk_count=int(payload["chunk_count"]),
            text=payload["text"],
            content_hash=payload["content_hash"],
            ingested_at=datetime.fromisoformat(payload["ingested_at"]),
            source=payload["source"],
            page=payload.get("page"),
            file_id=payload.get("file_id"),
            access=payload.get("access") or {},
            synced_from=payload.get("synced_from"),
            source_version=payload.get("source_version"),
            synced_at=_datetime(payload.get("synced_at")),
            metadata=payload.get("metadata") or {},
        )


def _datetime(value: Any) -> datetime | None:
    """A stored ISO timestamp, or None where there is none (older collections)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A BM25 vector: token ids and weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class ChunkVectors:
    """A chunk ready to store: its own dense vector, its document's (the normalized mean of
    the document's chunk vectors) and its BM25 vector."""

    chunk: Chunk
    dense: list[float]
    sparse: SparseVector
    doc: list[float]


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A search result: the chunk and its fused score."""

    chunk: Chunk
    score: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A chunk a retriever brought, with all its scores: cosine with the chunk's vector,
    cosine with its document's vector, and BM25 (0 where no query term occurs)."""

    point_id: str
    dense: float
    doc: float
    sparse: float


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What a collection holds of one document."""

    doc_id: str
    title: str
    source: str
    content_hash: str
    chunk_count: int
    stored_chunks: int
    ingested_at: datetime
    # Set on synced documents (see Chunk): which source, its version, the last sync.
    synced_from: str | None = None
    source_version: str | None = None
    synced_at: datetime | None = None

    @property
    def complete(self) -> bool:
        """True when every chunk of one version is stored (no interrupted write)."""
        return self.stored_chunks == self.chunk_count

    def point_ids(self, collection: str) -> list[str]:
        """The ids of every chunk of this version (stored or not)."""
        return [
            point_id(collection, self.doc_id, self.content_hash, i) for i in range(self.chunk_count)
        ]


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """A collection's fixed properties: they decide how its vectors are made."""

    name: str
    dense_size: int
    embedding_model: str
    language: str = "en"
    # BM25's average chunk length in its own tokens, measured on the first ingestion: length
    # normalisation is only right when it matches the collection's real chunks.
    bm25_avg_len: float | None = None
    # How far apart the embedding model puts this collection's passages: the standard
    # deviation of cosines between its chunks, measured on the first ingestion. Models differ
    # by 5x or more here (e5 packs every text into a narrow cone), and the fusion weighs
    # meaning against BM25 in these units, so one weight fits every model.
    dense_spread: float | None = None
    # How many tokens the embedding model cuts a word of this collection into, measured with
    # the spread. A model that knows the language reads 1.3-2 tokens a word; one that does not
    # (an English model on Cyrillic) reads letters, 4 and more, and its cosines are noise.
    tokens_per_word: float | None = None
    # Changes whenever documents are written to or deleted from the collection (a new random
    # value each time): answer caches key on it, so an answer cached before a document was
    # added, changed or removed, or before a release, is not served after it.
    generation: str | None = None
