"""The weekly digest: each content owner gets, in a private message, the most frequent
unanswered questions of their collections over the past week, with the same "Answer" buttons
as /gaps. Off by default (BOT_DIGEST_WEEKDAY=off); sent on that weekday from BOT_DIGEST_HOUR
(UTC).

Sent once a week however many replicas run and however often they restart: the week's round
holds a lock (in Redis with replicas) and the time it was sent is kept in the knowledge loop's
collection, checked again under the lock. A digest that could not be delivered to an owner
(they never started the bot, or blocked it) is logged and not retried that week.
"""

import asyncio
import hashlib
import html
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.storage.base import BaseStorage

from app.bot import conversation
from app.bot.access import Access
from app.bot.keyboards import answer_gap_buttons
from app.bot.locks import ConversationLocks
from app.bot.texts import text_in
from app.loop.background import BackgroundTask
from app.loop.gaps import Gap, report
from app.loop.records import LOOP_COLLECTION, LoopRecords
from kb.schema import Chunk, ChunkVectors, SparseVector, point_id

log = logging.getLogger(__name__)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SHOWN = 10
_STATE_DOC, _STATE_TITLE = "digest/state", "digest"
_STATE_HASH = hashlib.sha256(_STATE_DOC.encode()).hexdigest()[:16]


def last_due(now: datetime, weekday: int, hour: int) -> datetime:
    """The latest scheduled moment at or before now (weekday 0 is Monday, hour in UTC)."""
    moment = now.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    moment -= timedelta(days=(moment.weekday() - weekday) % 7)
    return moment if moment <= now else moment - timedelta(days=7)


async def post_gaps(
    bot: Bot,
    storage: BaseStorage,
    chat_id: int,
    *,
    language: str,
    head: str,
    found: Sequence[Gap],
    owned: Sequence[str],
    access: Access,
) -> None:
    """One gaps report message: numbered gaps with their other wordings and an "Answer n"
    button each; what each button stands for is kept with the message."""
    lines = [html.escape(head)]
    for n, gap in enumerate(found, 1):
        where = ", ".join(access.collections[c].label for c in gap.collections if c in owned)
        lines.append(
            f"\n<b>{n}.</b> {html.escape(gap.question)} — {gap.count}x ({html.escape(where)})"
        )
        lines += [f"   <i>{html.escape(example)}</i>" for example in gap.examples[1:]]
    sent = await bot.send_message(
        chat_id,
        "\n".join(lines),
        parse_mode="HTML",
        reply_markup=answer_gap_buttons(len(found), text_in(language, "gap_button", n="{n}")),
    )
    # What each button stands for: the question, and the owned collection it goes to.
    listing = [
        [gap.question, next(c for c in gap.collections if c in owned), gap.records[0].language]
        for gap in found
    ]
    await conversation.mark_messages(storage, bot.id, chat_id, [sent.message_id], {"gaps": listing})


class Digest(BackgroundTask):
    """The digest task, and one round of it."""

    def __init__(
        self,
        loop: LoopRecords,
        access: Access,
        locks: ConversationLocks,
        storage: BaseStorage,
        *,
        weekday: str,
        hour: int,
    ) -> None:
        self.loop = loop
        self.access = access
        self.locks = locks
        self.storage = storage
        self.weekday = WEEKDAYS.index(weekday) if weekday in WEEKDAYS else None
        self.hour = hour

    async def send_due(self, bot: Bot, now: datetime | None = None) -> int:
        """Send this week's digest if it is due and was not sent yet; returns how many owners
        received one."""
        if self.weekday is None:
            return 0
        now = now or datetime.now(UTC)
        due = last_due(now, self.weekday, self.hour)
        if (await self._sent_at() or datetime.min.replace(tzinfo=UTC)) >= due:
            return 0
        async with self.locks.hold("digest"):
            # Another replica may have sent it while this one waited for the lock.
            if (await self._sent_at() or datetime.min.replace(tzinfo=UTC)) >= due:
                return 0
            sent = await self._send(bot, now)
            await self._note_sent(now)
        log.info("weekly gaps digest sent to %d owners", sent)
        return sent

    async def _send(self, bot: Bot, now: datetime) -> int:
        owners: dict[int, list[str]] = {}
        for config in self.access.collections.values():
            for owner in config.owners:
                owners.setdefault(owner, []).append(config.name)
        sent = 0
        for owner, owned in owners.items():
            found = (await report(self.loop, now - timedelta(days=7), owned))[:SHOWN]
            if not found:
                continue
            first = self.access.collections[owned[0]]
            language = "ru" if first.language == "ru" else "en"
            try:
                await post_gaps(
                    bot,
                    self.storage,
                    owner,
                    language=language,
                    head=text_in(language, "digest_head"),
                    found=found,
                    owned=owned,
                    access=self.access,
                )
            except TelegramAPIError as exc:
                log.warning("weekly digest not delivered to owner %s: %s", owner, exc)
                continue
            sent += 1
        return sent

    async def _sent_at(self) -> datetime | None:
        if await self.loop.store.get_collection(LOOP_COLLECTION) is None:
            return None
        pid = point_id(LOOP_COLLECTION, _STATE_DOC, _STATE_HASH, 0)
        found = await self.loop.store.fetch(LOOP_COLLECTION, [pid])
        return found[0].ingested_at if found else None

    async def _note_sent(self, now: datetime) -> None:
        vector = list(await self.loop.embed(_STATE_TITLE))
        chunk = Chunk(
            doc_id=_STATE_DOC,
            collection=LOOP_COLLECTION,
            title=_STATE_TITLE,
            heading_path=(),
            chunk_index=0,
            chunk_count=1,
            text=_STATE_TITLE,
            content_hash=_STATE_HASH,
            ingested_at=now,
            source="bot",
        )
        points = [ChunkVectors(chunk, vector, SparseVector([], []), vector)]
        await self.loop.store.upsert(LOOP_COLLECTION, points)

    async def start(self, bot: Bot) -> None:
        """Start the task (Dispatcher start-up); none when the digest is off."""
        if self.weekday is not None:
            self._begin(self._run(bot), "gaps-digest")

    async def _run(self, bot: Bot) -> None:
        # Checked at start (a restart on the day still sends it) and every ten minutes.
        while True:
            try:
                await self.send_due(bot)
            except Exception as exc:  # the store, Redis or Telegram: the next round tries again
                log.warning("weekly digest failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(600)
