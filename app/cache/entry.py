"""One cached answer, and its point in the cache's system collection.

The point's document id is the scope, so a paraphrase is searched for within one scope only
(the store filters by document id), and its content hash is the question's key, so the exact
tier is one point lookup by a deterministic id."""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from app.cache.keys import question_key
from app.chain.types import SourceRef
from kb.schema import Chunk, point_id
from kb.store import SYSTEM_PREFIX

CACHE_COLLECTION = f"{SYSTEM_PREFIX}cache"
ENTRY_TITLE = "answer"


def entry_point(scope: str, key: str) -> str:
    """The point id of the entry for a question key in a scope."""
    return point_id(CACHE_COLLECTION, scope, key, 0)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """An answer, the question it answered, and the version of each document it cites."""

    scope: str
    question: str
    answer: str
    language: str
    sources: tuple[SourceRef, ...]
    # The content hash of each cited document when it was answered (same order as sources).
    versions: tuple[str, ...]
    created_at: datetime
    trace_id: str | None = None
    # Who asked (their wording is kept): forget_user deletes their entries.
    user: str | None = None

    @property
    def key(self) -> str:
        """The question's key."""
        return question_key(self.question)

    @property
    def id(self) -> str:
        """ "scope:key", what a 👎 evicts."""
        return f"{self.scope}:{self.key}"

    def to_chunk(self, collections: tuple[str, ...]) -> Chunk:
        """The entry as a point of the cache collection."""
        return Chunk(
            doc_id=self.scope,
            collection=CACHE_COLLECTION,
            title=ENTRY_TITLE,
            heading_path=collections,
            chunk_index=0,
            chunk_count=1,
            text=self.question,
            content_hash=self.key,
            ingested_at=self.created_at,
            source="cache",
            access={
                "answer": self.answer,
                "language": self.language,
                "sources": [asdict(s) for s in self.sources],
                "versions": list(self.versions),
                "trace_id": self.trace_id,
                "user": self.user,
            },
        )

    @classmethod
    def from_chunk(cls, chunk: Chunk) -> "CacheEntry":
        """An entry read back from its point."""
        meta = chunk.access
        return cls(
            scope=chunk.doc_id,
            question=chunk.text,
            answer=str(meta.get("answer") or ""),
            language=str(meta.get("language") or "en"),
            sources=tuple(_source(s) for s in meta.get("sources") or ()),
            versions=tuple(str(v) for v in meta.get("versions") or ()),
            created_at=chunk.ingested_at,
            trace_id=meta.get("trace_id"),
            user=meta.get("user"),
        )


def _source(data: Mapping[str, Any]) -> SourceRef:
    return SourceRef(
        n=int(data["n"]),
        title=str(data["title"]),
        doc_id=str(data["doc_id"]),
        collection=str(data["collection"]),
        source=str(data["source"]),
        url=data.get("url"),
        point_id=str(data.get("point_id") or ""),
        pages=tuple(int(p) for p in data.get("pages") or ()),
    )
