"""Cards: an escalated question waiting for an expert, or a 👎 waiting for support staff. Their
state is kept as points of the knowledge loop's collection in the vector store (sys-loop).

Why the store and not the FSM storage: without Redis the FSM storage lives in memory, and a
card must outlive a restart (an expert may answer days later); the store is the one place that
persists on every setup (embedded or server) and adds no server. A card is one point whose
payload holds the card as JSON; saving it again overwrites the point (its id is derived from
the card id only). Gap reports skip cards (their title is "card"); the retention removes old
ones with the gap records. Telegram messages of a card carry its tag (#q<id>, #r<id>), so a
reply finds the card without any other index.
"""

import contextlib
import hashlib
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from app.bot.locks import ConversationLocks, MemoryLocks
from app.loop.records import LOOP_COLLECTION, LoopRecords
from kb.schema import Chunk, ChunkVectors, SparseVector, point_id

CARD_TITLE = "card"
_TAG = re.compile(r"#([qr])([0-9a-f]{12})\b")


def new_id() -> str:
    """A card id: 12 hex digits (its tag and its buttons' callback data stay short)."""
    return uuid.uuid4().hex[:12]


class CardKind(StrEnum):
    """What a card asks for."""

    ESCALATION = "q"  # an expert's answer
    REVIEW = "r"  # support staff's look at a 👎


class Status(StrEnum):
    """Where a card stands."""

    OPEN = "open"
    ANSWERED = "answered"  # escalation: an expert's answer was relayed
    DONE = "done"  # closed: a review by support staff, an escalation that reached no one


class Source(BaseModel):
    """A document the bot's answer cited."""

    title: str
    doc_id: str
    collection: str
    url: str | None = None


class Asker(BaseModel):
    """Who asked and where the answer goes back to (their chat and forum topic)."""

    user_id: int
    chat_id: int
    thread_id: int | None = None
    name: str
    # The asker's interface language (what the relayed answer is framed in).
    language: str = "en"


class Reply(BaseModel):
    """An expert's answer to an escalation."""

    user_id: int
    name: str
    text: str
    saved_as: str | None = None


class Card(BaseModel):
    """One card and its state."""

    kind: CardKind
    question: str
    query: str
    collections: list[str]
    # Escalations: the collection whose experts answer (and where the answer may be saved).
    collection: str
    language: str = "en"
    trace_id: str | None = None
    answer: str | None = None
    sources: list[Source] = Field(default_factory=list)
    asker: Asker
    comment: str | None = None
    status: Status = Status.OPEN
    # (chat id, message id) of each posted copy of the card.
    posted: list[tuple[int, int]] = Field(default_factory=list)
    replies: list[Reply] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reminded_at: datetime | None = None
    # Review: the golden item written from it, and the escalation made from it.
    golden_id: str | None = None
    escalation: str | None = None
    # Lines shown under the card: what was done with it, and by whom.
    notes: list[str] = Field(default_factory=list)
    id: str = Field(default_factory=new_id)

    @property
    def tag(self) -> str:
        """The hashtag its messages carry."""
        return f"#{self.kind.value}{self.id}"


def tag_in(text: str | None) -> tuple[CardKind, str] | None:
    """The card a message's text names (its kind and id), if any."""
    found = _TAG.search(text or "")
    return (CardKind(found.group(1)), found.group(2)) if found else None


class CardStore:
    """Cards in the knowledge loop's collection. Every read-modify-write of a card holds that
    card's lock: in Redis with bot replicas (RedisLocks), so two experts answering at once on
    two replicas are still told apart — one relayed, the other told it was answered already —
    and a reminder is sent by one replica only."""

    def __init__(self, loop: LoopRecords, locks: ConversationLocks | None = None) -> None:
        self.loop = loop
        self.locks: ConversationLocks = locks or MemoryLocks()
        self._vectors: dict[str, tuple[float, ...]] = {}

    def locked(self, card_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the card's lock for a read-modify-write."""
        return self.locks.hold(f"card:{card_id}")

    @staticmethod
    def _doc_id(card_id: str) -> str:
        return f"card/{card_id}"

    @staticmethod
    def _hash(card_id: str) -> str:
        return hashlib.sha256(card_id.encode()).hexdigest()[:16]

    async def save(self, card: Card) -> None:
        """Store the card (overwriting its previous state)."""
        vector = self._vectors.get(card.id)
        if vector is None:
            # The question's vector (also what makes the collection exist with its model).
            vector = self._vectors[card.id] = await self.loop.embed(card.question)
        chunk = Chunk(
            doc_id=self._doc_id(card.id),
            collection=LOOP_COLLECTION,
            title=CARD_TITLE,
            heading_path=tuple(card.collections),
            chunk_index=0,
            chunk_count=1,
            text=card.question,
            content_hash=self._hash(card.id),
            ingested_at=card.created_at,
            source="telegram",
            access={"card": card.model_dump(mode="json")},
        )
        points = [ChunkVectors(chunk, list(vector), SparseVector([], []), list(vector))]
        await self.loop.store.upsert(LOOP_COLLECTION, points)

    async def get(self, card_id: str) -> Card | None:
        """The card, or None when unknown (or removed by the retention)."""
        if await self.loop.store.get_collection(LOOP_COLLECTION) is None:
            return None
        pid = point_id(LOOP_COLLECTION, self._doc_id(card_id), self._hash(card_id), 0)
        found = await self.loop.store.fetch(LOOP_COLLECTION, [pid])
        return _card(found[0]) if found else None

    async def all(self) -> list[Card]:
        """Every card kept, oldest first."""
        if await self.loop.store.get_collection(LOOP_COLLECTION) is None:
            return []
        infos = [
            i
            for i in await self.loop.store.list_documents(LOOP_COLLECTION)
            if i.title == CARD_TITLE
        ]
        ids = [point_id(LOOP_COLLECTION, i.doc_id, i.content_hash, 0) for i in infos]
        chunks = await self.loop.store.fetch(LOOP_COLLECTION, ids)
        return sorted((_card(c) for c in chunks), key=lambda c: c.created_at)


def _card(chunk: Chunk) -> Card:
    data: Any = chunk.access.get("card")
    return Card.model_validate(data)
