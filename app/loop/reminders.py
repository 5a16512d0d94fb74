"""Reminders: an escalation nobody answered is brought up again in its experts' chats every
BOT_ESCALATION_REMIND_S, by a background task of the bot (started and stopped with the
Dispatcher). The reminder replies to the card and carries its tag, so replying to it answers."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

from app.bot.access import Access
from app.bot.texts import text_in
from app.loop.background import BackgroundTask
from app.loop.cards import Card, CardKind, CardStore, Status

log = logging.getLogger(__name__)


class Reminders(BackgroundTask):
    """The reminder task and one round of it."""

    def __init__(self, cards: CardStore, access: Access, every_s: float) -> None:
        self.cards = cards
        self.access = access
        self.every = timedelta(seconds=every_s)

    def _due(self, card: Card, now: datetime) -> bool:
        waiting = card.kind is CardKind.ESCALATION and card.status is Status.OPEN
        return waiting and now - (card.reminded_at or card.created_at) >= self.every

    async def remind_due(self, bot: Bot, now: datetime | None = None) -> int:
        """Remind the experts of every open escalation unanswered for the interval since it
        was posted or last reminded; returns how many."""
        now = now or datetime.now(UTC)
        reminded = 0
        for card in await self.cards.all():
            if not self._due(card, now):
                continue
            async with self.cards.locked(card.id):
                # Noted first, under the lock: an answer that just came in is not reminded.
                latest = await self.cards.get(card.id)
                if latest is None or not self._due(latest, now):
                    continue
                latest.reminded_at = now
                await self.cards.save(latest)
            config = self.access.collections.get(card.collection)
            lang = config.language if config is not None and config.language == "ru" else "en"
            text = f"{text_in(lang, 'expert_reminder', question=card.question)} {card.tag}"
            for chat_id, message_id in latest.posted:
                try:
                    await bot.send_message(chat_id, text, reply_to_message_id=message_id)
                except TelegramAPIError as exc:
                    log.warning("could not remind experts chat %s: %s", chat_id, exc)
            reminded += 1
        return reminded

    async def start(self, bot: Bot) -> None:
        """Start the task (Dispatcher start-up); none when the interval is 0."""
        if self.every > timedelta(0):
            self._begin(self._run(bot), "escalation-reminders")

    async def _run(self, bot: Bot) -> None:
        # Checked a few times per interval (at most every minute): a card is reminded soon
        # after it is due, without scanning the cards constantly.
        pause = min(60.0, max(0.05, self.every.total_seconds() / 4))
        while True:
            await asyncio.sleep(pause)
            try:
                await self.remind_due(bot)
            except Exception as exc:  # the store or Telegram: the next round tries again
                log.warning("reminding experts failed: %s: %s", type(exc).__name__, exc)
