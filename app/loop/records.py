"""What the knowledge loop remembers: every question the knowledge base failed (not found, a
thumbs-down, a clarifying question left unanswered), kept in the vector store the project
already runs, in a system collection of its own.

Why Qdrant and not Redis or a database: grouping questions by meaning needs each question's
vector, the store works embedded and as a server (so `python -m app gaps` runs beside the bot
on the server, and alone on the embedded store), and it adds no server. Each record is one
point: the question as its text, the record's fields in the payload (with its vector, so a
report needs no model run), its collections as the heading path. Records older than the
retention are deleted as new ones arrive.
"""

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kb.embedder import BM25_LANGUAGES, DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.schema import Chunk, ChunkVectors, CollectionSpec, point_id
from kb.store import SYSTEM_PREFIX, VectorStore

if TYPE_CHECKING:
    from app.pii import Masker

log = logging.getLogger(__name__)

# A system collection: the collections file and the CLIs refuse such names for knowledge
# bases, so none can be mixed into it.
LOOP_COLLECTION = f"{SYSTEM_PREFIX}loop"
_PURGE_EVERY = timedelta(hours=1)


class Outcome(StrEnum):
    """Why a question is a gap."""

    NOT_FOUND = "not_found"
    THUMBS_DOWN = "thumbs_down"
    ABANDONED = "abandoned_clarify"


@dataclass(frozen=True, slots=True)
class GapRecord:
    """One question the knowledge base did not answer well."""

    question: str
    query: str
    collections: tuple[str, ...]
    outcome: Outcome
    asked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    language: str = "en"
    trace_id: str | None = None
    # Who asked: only when LOOP_KEEP_USERS is on (None otherwise).
    user: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The question's vector (filled in when it is stored).
    vector: tuple[float, ...] = ()

    def fields(self) -> dict[str, Any]:
        """The payload fields of this record."""
        return {
            "query": self.query,
            "outcome": self.outcome.value,
            "language": self.language,
            "trace_id": self.trace_id,
            "user": self.user,
            "vector": list(self.vector),
        }

    @classmethod
    def from_chunk(cls, chunk: Chunk) -> "GapRecord":
        """A record read back from its point."""
        meta = chunk.access
        return cls(
            question=chunk.text,
            query=str(meta.get("query") or chunk.text),
            collections=chunk.heading_path,
            outcome=Outcome(str(meta.get("outcome", Outcome.NOT_FOUND.value))),
            asked_at=chunk.ingested_at,
            language=str(meta.get("language") or "en"),
            trace_id=meta.get("trace_id"),
            user=meta.get("user"),
            id=chunk.doc_id,
            vector=tuple(float(v) for v in meta.get("vector") or ()),
        )


class LoopRecords:
    """Gap records in the store: written by the bot, read by /gaps and `python -m app gaps`."""

    def __init__(
        self,
        store: VectorStore,
        dense: DenseEmbedders,
        sparse: SparseEmbedder,
        *,
        language: str = "ru",
        retention_days: float = 90.0,
        keep_users: bool = False,
        masker: "Masker | None" = None,
    ) -> None:
        self.store = store
        # Personal data in the questions is masked before it is stored (PII_MASK).
        self.masker = masker
        self.dense = dense
        self.sparse = sparse
        # The records' model: the one configured for this language (multilingual by default,
        # so a question asked in Russian and in English can fall in one group).
        self.language = language
        self.retention = timedelta(days=retention_days)
        self.keep_users = keep_users
        self._spec: CollectionSpec | None = None
        self._embedder: DenseEmbedder | None = None
        self._purged_at: datetime | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> tuple[CollectionSpec, DenseEmbedder]:
        async with self._lock:
            if self._spec is None or self._embedder is None:
                existing = await self.store.get_collection(LOOP_COLLECTION)
                if existing is not None:
                    embedder = await asyncio.to_thread(
                        self.dense.for_model, existing.embedding_model, LOOP_COLLECTION
                    )
                else:
                    embedder = await asyncio.to_thread(self.dense.for_language, self.language)
                wanted = CollectionSpec(
                    name=LOOP_COLLECTION,
                    dense_size=embedder.dimension,
                    embedding_model=embedder.model_name,
                    language=existing.language if existing else self.language,
                    bm25_avg_len=12.0,
                )
                self._spec = await self.store.ensure_collection(wanted)
                self._embedder = embedder
            return self._spec, self._embedder

    async def embed(self, text: str) -> tuple[float, ...]:
        """The vector a question is grouped by (the records' model, as a query)."""
        _, embedder = await self._ready()
        return tuple(await asyncio.to_thread(embedder.embed_query, text))

    async def add(self, record: GapRecord) -> GapRecord:
        """Store a record (its vector computed off the event loop); returns it as stored."""
        spec, embedder = await self._ready()
        question, query = record.question, record.query
        if self.masker is not None:
            question, query = await asyncio.to_thread(self._redact, question, query)
        vector = list(await asyncio.to_thread(embedder.embed_query, question))
        stored = GapRecord(
            question=question,
            query=query,
            collections=record.collections,
            outcome=record.outcome,
            asked_at=record.asked_at,
            language=record.language,
            trace_id=record.trace_id,
            user=record.user if self.keep_users else None,
            id=record.id,
            vector=tuple(vector),
        )
        chunk = _chunk(stored)
        sparse = self.sparse.embed_passages([chunk.text], spec.language, spec.bm25_avg_len)[0]
        await self.store.upsert(LOOP_COLLECTION, [ChunkVectors(chunk, vector, sparse, vector)])
        await self._purge_due(stored.asked_at)
        return stored

    def terms(self, record: GapRecord) -> frozenset[int]:
        """The question's BM25 terms (stemmed in its language, stopwords dropped)."""
        language = record.language if record.language in BM25_LANGUAGES else "en"
        return frozenset(self.sparse.embed_query(record.question, language).indices)

    async def model_name(self) -> str:
        """The model the records' vectors come from."""
        _, embedder = await self._ready()
        return embedder.model_name

    def _redact(self, question: str, query: str) -> tuple[str, str]:
        assert self.masker is not None
        return self.masker.redact(question), self.masker.redact(query)

    async def since(
        self, when: datetime, collections: Iterable[str] | None = None
    ) -> list[GapRecord]:
        """Records from `when` on, newest first; only those touching the given collections
        (all when None)."""
        if await self.store.get_collection(LOOP_COLLECTION) is None:
            return []
        wanted = set(collections) if collections is not None else None
        # Only gap records (the collection also keeps cards: app/loop/cards.py).
        outcomes = {o.value for o in Outcome}
        infos = [
            i
            for i in await self.store.list_documents(LOOP_COLLECTION)
            if i.ingested_at >= when and i.title in outcomes
        ]
        ids = [point_id(LOOP_COLLECTION, i.doc_id, i.content_hash, 0) for i in infos]
        records = [GapRecord.from_chunk(c) for c in await self.store.fetch(LOOP_COLLECTION, ids)]
        if wanted is not None:
            records = [r for r in records if wanted.intersection(r.collections)]
        return sorted(records, key=lambda r: r.asked_at, reverse=True)

    async def purge(self, now: datetime | None = None) -> int:
        """Delete the records older than the retention; returns how many."""
        if await self.store.get_collection(LOOP_COLLECTION) is None:
            return 0
        limit = (now or datetime.now(UTC)) - self.retention
        removed = 0
        for info in await self.store.list_documents(LOOP_COLLECTION):
            if info.ingested_at < limit:
                removed += await self.store.delete_document(LOOP_COLLECTION, info.doc_id)
        return removed

    async def _purge_due(self, now: datetime) -> None:
        if self._purged_at is None or now - self._purged_at >= _PURGE_EVERY:
            self._purged_at = now
            removed = await self.purge(now)
            if removed:
                log.info("removed %d knowledge-loop records past the retention", removed)


def _chunk(record: GapRecord) -> Chunk:
    return Chunk(
        doc_id=record.id,
        collection=LOOP_COLLECTION,
        title=record.outcome.value,
        heading_path=record.collections,
        chunk_index=0,
        chunk_count=1,
        text=record.question,
        content_hash=hashlib.sha256(record.question.encode()).hexdigest()[:16],
        ingested_at=record.asked_at,
        source="telegram",
        access=record.fields(),
    )


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """ "30d", "12h", "2w" (or an ISO date) as the moment that long ago."""
    now = now or datetime.now(UTC)
    units = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
    text = text.strip().lower()
    if text[-1:] in units and text[:-1].isdigit():
        return now - int(text[:-1]) * units[text[-1]]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: use 7d, 30d, 12h, 2w or a date (2026-11-01)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def vectors_of(records: Sequence[GapRecord]) -> list[tuple[float, ...]]:
    """Each record's stored vector."""
    return [r.vector for r in records]


async def note_gap(loop: "LoopRecords | None", record: GapRecord) -> None:
    """Record a gap if the loop is on; a failure is logged and never reaches the user (the
    answer was already given)."""
    if loop is None or not record.collections:
        return
    try:
        await loop.add(record)
    except Exception as exc:  # the store or the model: the report misses one question
        log.warning("could not record an unanswered question: %s: %s", type(exc).__name__, exc)
