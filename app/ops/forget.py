"""Deleting one person's data on request (`python -m app forget-user TELEGRAM_ID`): their
conversation state and the bot's message records in Redis, the knowledge loop's records and
cards that carry their id, their cached answers, and their Langfuse traces. Reports what was
removed per store.

Message records (answer -> trace, with the question) are found by the asker's id they carry,
by the chat (a private chat is the person's own), or as a comment request to them.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.loop.cards import CARD_TITLE, Card
from app.loop.records import LOOP_COLLECTION, GapRecord
from app.ops.traces import TraceAdmin
from kb.schema import point_id
from kb.store import VectorStore

log = logging.getLogger(__name__)

# aiogram's RedisStorage keys (DefaultKeyBuilder): fsm:<chat>[:<thread>]:<user>:<part>.
FSM_PATTERN = "fsm:*"
RATE_PREFIX = "kb:rate:"


class ForgetsUsers(Protocol):
    """A store that can delete what it keeps of one user (the answer cache)."""

    async def forget_user(self, user_id: str) -> int:
        """Delete the user's entries; returns how many."""
        ...


@dataclass
class ForgetReport:
    """Per store: how many items were removed, why a store was skipped, or how it failed."""

    user_id: int
    removed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "user_id": self.user_id,
            "removed": self.removed,
            "skipped": self.skipped,
            "failed": self.failed,
        }

    def lines(self) -> list[str]:
        """One line per store, for people."""
        out = [f"removed {name}: {count}" for name, count in self.removed.items()]
        out += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        out += [f"FAILED {name}: {why} (run it again)" for name, why in self.failed.items()]
        return out


async def forget_redis(redis: Any, user_id: int) -> tuple[int, int]:
    """Delete the user's conversation state and the message records about them; returns
    (state keys, message records) removed."""
    me, states, records = str(user_id), 0, 0
    doomed: list[Any] = []
    async for raw in redis.scan_iter(match=FSM_PATTERN, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        parts = key.split(":")
        if len(parts) < 4:
            continue
        chat, user, part = parts[1], parts[-2], parts[-1]
        if user == me:
            doomed.append(raw)
            states += 1
        elif chat == me or (part == "data" and _about(await redis.get(raw), user_id)):
            doomed.append(raw)
            records += 1
    for start in range(0, len(doomed), 500):
        await redis.delete(*doomed[start : start + 500])
    await redis.delete(f"{RATE_PREFIX}{user_id}")
    return states, records


def _about(value: Any, user_id: int) -> bool:
    """A message record that names the user: the asker of the answer, or the one asked for a
    comment."""
    if value is None:
        return False
    try:
        record = json.loads(value)
    except (ValueError, TypeError):
        return False
    if not isinstance(record, dict):
        return False
    return user_id in (record.get("asker"), record.get("comment_by"))


async def forget_loop(store: VectorStore, user_id: int) -> tuple[int, int]:
    """Delete the knowledge loop's records kept with the user's id (LOOP_KEEP_USERS) and the
    cards they asked (escalations, review cards with their comment); returns (records, cards)."""
    if await store.get_collection(LOOP_COLLECTION) is None:
        return 0, 0
    infos = await store.list_documents(LOOP_COLLECTION)
    ids = [point_id(LOOP_COLLECTION, i.doc_id, i.content_hash, 0) for i in infos]
    records = cards = 0
    for start in range(0, len(ids), 256):
        for chunk in await store.fetch(LOOP_COLLECTION, ids[start : start + 256]):
            if chunk.title == CARD_TITLE:
                card = Card.model_validate(chunk.access.get("card"))
                if card.asker.user_id == user_id:
                    cards += bool(await store.delete_document(LOOP_COLLECTION, chunk.doc_id))
            elif GapRecord.from_chunk(chunk).user == str(user_id):
                records += bool(await store.delete_document(LOOP_COLLECTION, chunk.doc_id))
    return records, cards


async def forget_user(
    user_id: int,
    *,
    store: VectorStore,
    redis: Any | None,
    traces: TraceAdmin | None,
    cache: ForgetsUsers | None = None,
) -> ForgetReport:
    """Remove what every store keeps of one Telegram user. A store that fails is reported
    (its error's type) and the others still run; running it again finishes the job."""
    report = ForgetReport(user_id)

    async def redis_part() -> None:
        assert redis is not None
        states, records = await forget_redis(redis, user_id)
        report.removed["conversation_state"] = states
        report.removed["message_records"] = records

    async def loop_part() -> None:
        records, cards = await forget_loop(store, user_id)
        report.removed["loop_records"] = records
        report.removed["loop_cards"] = cards

    async def cache_part() -> None:
        assert cache is not None
        report.removed["cached_answers"] = await cache.forget_user(str(user_id))

    async def traces_part() -> None:
        assert traces is not None
        report.removed["traces"] = await traces.forget_user(str(user_id))

    parts: list[tuple[str, Callable[[], Awaitable[None]], str | None]] = [
        ("conversation_state", redis_part, None if redis is not None else _NO_REDIS),
        ("loop_records", loop_part, None),
        ("cached_answers", cache_part, None if cache is not None else "no answer cache here"),
        ("traces", traces_part, None if traces is not None else "tracing is off (no keys)"),
    ]
    for name, part, skip in parts:
        if skip is not None:
            report.skipped[name] = skip
            continue
        try:
            await part()
        except Exception as exc:  # reported per store; the others still run
            log.error("forget-user: %s failed: %s", name, type(exc).__name__)
            report.failed[name] = type(exc).__name__
    log.info("forgot user %s: %s", user_id, report.removed)
    return report


_NO_REDIS = (
    "no REDIS_URL: the state is in the bot's memory and expires after BOT_STATE_TTL_S "
    "(or at the bot's restart)"
)
