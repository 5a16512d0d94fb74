"""The review queue: a 👎 posts a card to the support staff's chat (BOT_REVIEW_CHAT) with the
question, the answer, its sources, the comment when one comes, and the trace. Its buttons add
the question to the golden set (the correct answer comes as a reply), send it to the experts as
an escalation, or close it. Cards live in the store (app/loop/cards.py): they survive restarts.
"""

import asyncio
import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ForceReply, InlineKeyboardMarkup, Message, User

from app.bot.keyboards import review_buttons
from app.bot.settings import BotSettings
from app.bot.texts import t, text_in
from app.eval.golden import GoldenItem, dataset_item_id
from app.loop.cards import Card, CardKind, CardStore, Status, new_id
from app.loop.escalation import Escalations, display_name
from app.tracing import Tracer

log = logging.getLogger(__name__)


class Reviews:
    """The review flow's logic; off without BOT_REVIEW_CHAT."""

    def __init__(
        self, cards: CardStore, escalations: Escalations, settings: BotSettings, tracer: Tracer
    ) -> None:
        self.cards = cards
        self.escalations = escalations
        self.settings = settings
        self.tracer = tracer

    @property
    def chat(self) -> int | None:
        """The review chat (None: reviews are off)."""
        return self.settings.review_chat

    def _lang(self, card: Card) -> str:
        return card.language if card.language in ("en", "ru") else "en"

    def _text(self, card: Card) -> str:
        config = self.escalations.access.collections.get(card.collection)
        return self.escalations.render(card, config, self._lang(card))

    def _buttons(self, card: Card) -> InlineKeyboardMarkup | None:
        if card.status is Status.DONE:
            return None
        lang = self._lang(card)
        labels = (
            text_in(lang, "review_gold_button"),
            text_in(lang, "review_escalate_button"),
            text_in(lang, "review_done_button"),
        )
        return review_buttons(card.id, labels)

    async def post(self, bot: Bot, noted: dict[str, Any], chat_id: int) -> Card | None:
        """Post a review card for a 👎 (what the answer's message noted); None when off."""
        if self.chat is None:
            return None
        card = self.escalations.card_of(noted, chat_id, CardKind.REVIEW)
        if card is None:
            return None
        # Kept before it is shown: a button pressed at once finds it.
        await self.cards.save(card)
        try:
            sent = await bot.send_message(
                self.chat, self._text(card), parse_mode="HTML", reply_markup=self._buttons(card)
            )
        except TelegramAPIError as exc:
            log.warning("could not post a review card to chat %s: %s", self.chat, exc)
            return None
        async with self.cards.locked(card.id):
            latest = await self.cards.get(card.id) or card
            latest.posted.append((self.chat, sent.message_id))
            await self.cards.save(latest)
        return latest

    async def refresh(self, bot: Bot, card: Card) -> None:
        """Show the card's current state where it was posted."""
        for chat_id, message_id in card.posted:
            try:
                await bot.edit_message_text(
                    self._text(card),
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode="HTML",
                    reply_markup=self._buttons(card),
                )
            except TelegramAPIError as exc:
                log.info("review card %s not updated: %s", card.id, exc)

    async def add_comment(self, bot: Bot, card_id: str, comment: str) -> None:
        """The employee's comment on the 👎 joins its card."""
        async with self.cards.locked(card_id):
            card = await self.cards.get(card_id)
            if card is None:
                return
            card.comment = comment
            await self.cards.save(card)
        await self.refresh(bot, card)

    def in_review_chat(self, chat_id: int) -> bool:
        """Review cards are handled in the review chat only."""
        return self.chat is not None and chat_id == self.chat

    async def ask_gold(self, message: Message, card: Card, user: User) -> None:
        """ "Add to golden set": ask for the correct answer, as a reply (tagged with the card)."""
        if card.golden_id:
            await message.answer(t("review_gold_already", user, id=card.golden_id))
            return
        name = html.escape(user.first_name)
        text = html.escape(t("review_gold_ask", user))
        await message.answer(
            f'<a href="tg://user?id={user.id}">{name}</a>, {text} {card.tag}',
            parse_mode="HTML",
            reply_markup=ForceReply(selective=True),
        )

    async def gold(self, bot: Bot, message: Message, card_id: str) -> None:
        """The correct answer (a reply in the review chat): a golden-set item, in the JSONL
        file and, with Langfuse, in its dataset linked to the source trace."""
        user = message.from_user
        async with self.cards.locked(card_id):
            card = await self.cards.get(card_id)
            if card is None or card.kind is not CardKind.REVIEW:
                await message.reply(t("card_gone", user))
                return
            if card.golden_id:
                await message.reply(t("review_gold_already", user, id=card.golden_id))
                return
            facts = [line.strip() for line in (message.text or "").splitlines() if line.strip()]
            documents = list(dict.fromkeys(s.doc_id for s in card.sources))
            item = GoldenItem(
                id=f"tg-{card.id}",
                question=card.question,
                collections=tuple(card.collections),
                kind="answer",
                documents=tuple(documents),
                facts=tuple(facts),
            )
            await asyncio.to_thread(_append, self.settings.golden_file, item)
            await self._to_langfuse(item, card.trace_id)
            card.golden_id = item.id
            card.notes.append(text_in(self._lang(card), "review_gold_status", id=item.id))
            await self.cards.save(card)
        await self.refresh(bot, card)
        await message.reply(t("review_gold_saved", user, id=item.id))

    async def _to_langfuse(self, item: GoldenItem, trace_id: str | None) -> None:
        langfuse = self.tracer.langfuse
        if langfuse is None:
            return
        name = self.settings.golden_dataset
        data = item.model_dump(mode="json")

        def upload() -> None:
            langfuse.create_dataset(name=name, description="golden items from the review chat")
            langfuse.create_dataset_item(
                dataset_name=name,
                id=dataset_item_id(name, item.id),
                input={k: data[k] for k in ("question", "history", "collections")},
                expected_output={k: data[k] for k in ("kind", "documents", "facts")},
                metadata={"golden_id": item.id},
                source_trace_id=trace_id,
            )

        try:
            await asyncio.to_thread(upload)
        except Exception as exc:  # Langfuse down: the JSONL item is kept, the log says so
            log.warning("golden item %s not sent to Langfuse: %s", item.id, exc)

    async def escalate(self, bot: Bot, card_id: str, user: User) -> str:
        """ "Escalate to owners": the same question as an escalation card to the experts."""
        card = await self.cards.get(card_id)
        if card is None:
            return t("card_gone", user)
        if card.escalation:
            return t("expert_already_sent", user)
        config = self.escalations.experts_of(card.collections, [s.collection for s in card.sources])
        if config is None:
            return t("review_no_experts", user)
        escalation = card.model_copy(
            update={
                "kind": CardKind.ESCALATION,
                "collection": config.name,
                "status": Status.OPEN,
                "posted": [],
                "notes": [],
                "created_at": datetime.now(UTC),
                "id": new_id(),
            }
        )
        # Posted without the cards' lock held (escalate takes it to note where it went).
        if not await self.escalations.escalate(bot, escalation):
            return t("expert_unreachable", user)
        async with self.cards.locked(card_id):
            latest = await self.cards.get(card_id) or card
            latest.escalation = escalation.id
            latest.notes.append(text_in(self._lang(card), "review_escalated", title=config.label))
            await self.cards.save(latest)
        await self.refresh(bot, latest)
        return t("review_escalated", user, title=config.label)

    async def done(self, bot: Bot, card_id: str, user: User) -> str | None:
        """ "Done": the card is closed (its buttons go)."""
        async with self.cards.locked(card_id):
            card = await self.cards.get(card_id)
            if card is None:
                return t("card_gone", user)
            card.status = Status.DONE
            card.notes.append(text_in(self._lang(card), "review_done", name=display_name(user)))
            await self.cards.save(card)
        await self.refresh(bot, card)
        return None


def _append(path: Path, item: GoldenItem) -> None:
    """One JSON line more in the golden file (the format app/eval reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = item.model_dump(mode="json", exclude={"history"})
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(data, ensure_ascii=False) + "\n")
