"""Escalation to an expert: after "not found" or a 👎 the employee may send the question to the
experts of the collection (the collections file names a group chat and/or users). The card
they get shows what was asked and answered; the first expert who replies to it is relayed to
the employee (in their chat and topic), later ones are told it was answered; any of them may
save an answer to the knowledge base. Open cards are reminded (app/loop/reminders.py).
"""

import contextlib
import hashlib
import html
import logging
from collections.abc import Sequence
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.types import Message, User

from app.bot import conversation
from app.bot.access import Access, CollectionConfig
from app.bot.keyboards import Escalate, SaveReply, expert_rating_buttons, single_button
from app.bot.settings import BotSettings
from app.bot.texts import language_of, t, text_in
from app.chain.types import ChainRequest, ChainResult, ResultKind
from app.loop.answers import SavedAnswer, save_answer
from app.loop.card_text import card_html
from app.loop.cards import Asker, Card, CardKind, CardStore, Reply, Source, Status
from app.tracing import Tracer
from ingestion.pipeline import Ingestor

log = logging.getLogger(__name__)
_ANSWER_CHARS = 1500


def display_name(user: User) -> str:
    """A Telegram user's name as people see it."""
    name = " ".join(p for p in (user.first_name, user.last_name) if p) or f"id {user.id}"
    return f"{name} (@{user.username})" if user.username else name


def asked(
    request: ChainRequest, result: ChainResult, user: User, thread_id: int | None
) -> dict[str, Any]:
    """What a card needs of a question and the bot's result (noted with the bot's message)."""
    answered = result.kind is ResultKind.ANSWER
    return {
        "question": request.message,
        "query": result.query,
        "collections": list(request.collections),
        "language": result.language,
        "trace": result.trace_id,
        "answer": result.text[:_ANSWER_CHARS] if answered else None,
        "sources": [
            {"title": s.title, "doc_id": s.doc_id, "collection": s.collection, "url": s.url}
            for s in result.sources
        ],
        "by": user.id,
        "name": display_name(user),
        "ui": language_of(user),
        "thread": thread_id,
    }


def _asked_key(bot_id: int, chat_id: int, trace_id: str) -> StorageKey:
    # Beside the bot's message records (the bot as the "user"), one per answer's trace.
    return StorageKey(bot_id=bot_id, chat_id=chat_id, user_id=bot_id, destiny=f"asked:{trace_id}")


class Escalations:
    """The escalation flow's logic and state (cards in the store)."""

    def __init__(
        self,
        cards: CardStore,
        access: Access,
        settings: BotSettings,
        tracer: Tracer,
        ingestor: Ingestor,
    ) -> None:
        self.cards = cards
        self.access = access
        self.settings = settings
        self.tracer = tracer
        self.ingestor = ingestor

    # -- the employee's side ---------------------------------------------------------------

    def experts_of(
        self, collections: Sequence[str], sources: Sequence[str] = ()
    ) -> CollectionConfig | None:
        """The collection whose experts take a question: a cited one first, then the scope's."""
        known = self.access.collections
        for name in [*sources, *collections]:
            config = known.get(name)
            if config is not None and config.experts is not None:
                return config
        return None

    async def after_result(
        self,
        bot: Bot,
        *,
        message: Message,
        user: User,
        request: ChainRequest,
        result: ChainResult,
        storage: BaseStorage,
    ) -> None:
        """Note what a card would need of this answer (by its trace, for a 👎 on it); after
        "not found", offer the experts (a button under it) when the collections have some."""
        if result.kind not in (ResultKind.ANSWER, ResultKind.NOT_FOUND):
            return
        thread = message.message_thread_id if message.is_topic_message else None
        noted = asked(request, result, user, thread)
        await storage.set_data(_asked_key(bot.id, message.chat.id, result.trace_id), noted)
        if result.kind is ResultKind.NOT_FOUND:
            await self.offer(bot, message, noted, user, storage)

    async def noted_for(
        self, storage: BaseStorage, bot_id: int, chat_id: int, record: dict[str, Any], user: User
    ) -> dict[str, Any] | None:
        """What a card needs of the answer a message record stands for, as this user's (the
        noted answer and sources; after they expire, what the record itself has)."""
        if "question" not in record:
            return None
        trace = str(record.get("trace") or "")
        noted = await storage.get_data(_asked_key(bot_id, chat_id, trace)) if trace else {}
        if not noted:
            keep = ("question", "query", "language", "trace")
            noted = {k: record.get(k) for k in keep}
            noted["collections"] = list(record.get("collections") or [])
        return {**noted, "by": user.id, "name": display_name(user), "ui": language_of(user)}

    async def offer(
        self, bot: Bot, message: Message, noted: dict[str, Any], user: User, storage: BaseStorage
    ) -> None:
        """ "Ask an expert", in a message of its own (under "not found", or under the request
        for a comment after a 👎), when the collections have experts."""
        sources = [str(s["collection"]) for s in noted.get("sources") or []]
        if self.experts_of(noted["collections"], sources) is None:
            return
        sent = await message.answer(
            t("expert_offer", user),
            reply_markup=single_button(t("expert_button", user), Escalate()),
        )
        await conversation.mark_messages(
            storage, bot.id, message.chat.id, [sent.message_id], {"escalate": noted}
        )

    def card_of(self, noted: dict[str, Any], chat_id: int, kind: CardKind) -> Card | None:
        """A card from what was noted with the bot's message (None: no experts for it)."""
        sources = [Source.model_validate(s) for s in noted.get("sources") or []]
        config = self.experts_of(noted["collections"], [s.collection for s in sources])
        if config is None and kind is CardKind.ESCALATION:
            return None
        collection = config.name if config else (list(noted["collections"]) or [""])[0]
        user_id = int(noted["by"])
        return Card(
            kind=kind,
            question=str(noted["question"]),
            query=str(noted.get("query") or noted["question"]),
            collections=list(noted["collections"]),
            collection=collection,
            language=str(noted.get("language") or "en"),
            trace_id=noted.get("trace") or None,
            answer=noted.get("answer"),
            sources=sources,
            asker=Asker(
                user_id=user_id,
                chat_id=chat_id,
                thread_id=noted.get("thread"),
                name=self._who(user_id, str(noted.get("name") or "")),
                language=str(noted.get("ui") or "en"),
            ),
        )

    def _who(self, user_id: int, name: str) -> str:
        if self.settings.asker_identity == "name" and name:
            return name
        # A stable pseudonym: the same person is recognisable across cards, not identifiable.
        secret = self.settings.token.get_secret_value()
        return "#" + hashlib.sha256(f"{secret}:{user_id}".encode()).hexdigest()[:8]

    async def escalate(self, bot: Bot, card: Card) -> bool:
        """Post the card to its experts and keep it; False when no expert could be reached."""
        config = self.access.collections.get(card.collection)
        if config is None or config.experts is None:
            return False
        text = self.render(card, config)
        # Kept before it is shown: a reply that comes at once finds it.
        await self.cards.save(card)
        for chat_id in config.experts.chats:
            try:
                sent = await bot.send_message(chat_id, text, parse_mode="HTML")
            except TelegramAPIError as exc:
                log.warning("could not post a card to experts chat %s: %s", chat_id, exc)
                continue
            card.posted.append((chat_id, sent.message_id))
        async with self.cards.locked(card.id):
            # An expert may have answered already: keep their reply, add where it was posted.
            latest = await self.cards.get(card.id) or card
            latest.posted = card.posted
            if not card.posted:
                latest.status = Status.DONE  # reached no one: never reminded
            await self.cards.save(latest)
        return bool(card.posted)

    # -- the cards -------------------------------------------------------------------------

    def render(
        self, card: Card, config: CollectionConfig | None, language: str | None = None
    ) -> str:
        """The card's HTML, in the collection's language unless given."""
        lang = language or (config.language if config is not None else card.language)
        title = config.label if config is not None else card.collection
        return card_html(card, title, lang, self.tracer.trace_url(card.trace_id))

    def is_expert(self, card: Card, user_id: int, chat_id: int) -> bool:
        """An expert of the card's collection (by the chat or by id), an owner or an admin."""
        config = self.access.collections.get(card.collection)
        if config is None:
            return False
        experts = config.experts
        listed = experts is not None and experts.includes(user_id, chat_id)
        return listed or self.access.owns(user_id, card.collection)

    # -- the expert's side -----------------------------------------------------------------

    async def answer(self, bot: Bot, message: Message, card_id: str) -> None:
        """An expert's reply to a card: relayed to the employee once, kept either way."""
        user = message.from_user
        if user is None:
            return
        async with self.cards.locked(card_id):
            card = await self.cards.get(card_id)
            if card is None:
                await message.reply(t("card_gone", user))
                return
            if not self.is_expert(card, user.id, message.chat.id):
                config = self.access.collections.get(card.collection)
                title = config.label if config else card.collection
                await message.reply(t("expert_only", user, title=title))
                return
            reply = Reply(user_id=user.id, name=display_name(user), text=message.text or "")
            first = card.status is Status.OPEN
            if first:
                problem = await self._relay(bot, card, reply)
                if problem is not None:
                    await message.reply(t("expert_undelivered", user, reason=problem))
                    return
                card.status = Status.ANSWERED
            card.replies.append(reply)
            await self.cards.save(card)
        n = len(card.replies) - 1
        save = single_button(t("expert_save_button", user), SaveReply(card=card.id, n=n))
        if first:
            await message.reply(t("expert_delivered", user), reply_markup=save)
            await self._mark_answered(bot, card)
        else:
            name = card.replies[0].name
            await message.reply(t("expert_already", user, name=name), reply_markup=save)

    async def _relay(self, bot: Bot, card: Card, reply: Reply) -> str | None:
        """Send the expert's answer to the employee; the problem when it failed."""
        asker = card.asker
        head = text_in(
            asker.language, "expert_answer_head", name=reply.name, question=card.question
        )
        text = f"<b>{html.escape(head)}</b>\n\n{html.escape(reply.text)}"
        try:
            await bot.send_message(
                asker.chat_id,
                text,
                parse_mode="HTML",
                message_thread_id=asker.thread_id,
                reply_markup=expert_rating_buttons(card.id),
            )
        except TelegramAPIError as exc:
            log.warning("could not relay an expert's answer to chat %s: %s", asker.chat_id, exc)
            return exc.message
        return None

    async def _mark_answered(self, bot: Bot, card: Card) -> None:
        """The posted copies say who answered (and no longer ask for a reply)."""
        text = self.render(card, self.access.collections.get(card.collection))
        for chat_id, message_id in card.posted:
            with contextlib.suppress(TelegramAPIError):
                await bot.edit_message_text(
                    text, chat_id=chat_id, message_id=message_id, parse_mode="HTML"
                )

    async def save(self, card_id: str, n: int, user: User, chat_id: int) -> tuple[bool, str]:
        """Save the n-th reply to the knowledge base (an expert's press): whether it was
        saved, and what to tell them."""
        async with self.cards.locked(card_id):
            card = await self.cards.get(card_id)
            if card is None or not 0 <= n < len(card.replies):
                return False, t("card_gone", user)
            config = self.access.collections.get(card.collection)
            title = config.label if config else card.collection
            if not self.is_expert(card, user.id, chat_id):
                return False, t("expert_only", user, title=title)
            reply = card.replies[n]
            saved: SavedAnswer = await save_answer(
                self.ingestor,
                card.collection,
                card.question,
                reply.text,
                author=reply.name,
                language=card.language if card.language in ("en", "ru") else "en",
            )
            if saved.report.status == "failed":
                log.warning("saving an expert's answer failed: %s", saved.report.reason)
                return False, t("gap_failed", user, title=title)
            reply.saved_as = saved.doc_id
            await self.cards.save(card)
        return True, t("gap_saved", user, title=title, doc=saved.doc_id)

    def rated(self, card_id: str, user: User, up: bool, trace_id: str | None) -> None:
        """👍/👎 on a relayed answer: a score on the question's trace (one per user)."""
        if trace_id:
            self.tracer.score(
                trace_id,
                "expert_answer_feedback",
                1.0 if up else 0.0,
                boolean=True,
                score_id=f"{trace_id}-expert-{user.id}",
            )
