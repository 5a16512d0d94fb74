"""Questions: a text message (in groups, one that mentions or replies to the bot) runs the
chain with the chat's history and collection; a clarification option continues it."""

import asyncio
import logging
from dataclasses import dataclass, replace

from aiogram import Bot, F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from aiogram.utils.chat_action import ChatActionSender

from app.bot import conversation
from app.bot.access import Access
from app.bot.keyboards import ClarifyOption, feedback_buttons, option_buttons
from app.bot.limits import RateLimiter
from app.bot.render import result_messages
from app.bot.scope import chat_kind, search_scope
from app.bot.settings import BotSettings
from app.bot.streaming import AnswerStream
from app.bot.texts import t
from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult, ResultKind

log = logging.getLogger(__name__)


async def _addressed(message: Message, bot: Bot) -> str | None:
    """The question in the message, or None when it is not for the bot (groups: only when
    mentioned or replied to)."""
    text = (message.text or "").strip()
    if not text or text.startswith("/"):
        return None
    if chat_kind(message.chat) == "private":
        return text
    me = await bot.me()
    mention = f"@{me.username}" if me.username else None
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == me.id:
        return text
    if mention and mention.lower() in text.lower():
        start = text.lower().index(mention.lower())
        return (text[:start] + text[start + len(mention) :]).strip() or None
    return None


@dataclass
class Answering:
    """Runs the chain for a chat: typing shown, the answer streamed, at most N runs at once
    (the rest wait), the result sent with its buttons."""

    chain: Chain
    slots: asyncio.Semaphore
    settings: BotSettings

    async def run(
        self, message: Message, bot: Bot, request: ChainRequest, talk: conversation.Conversation
    ) -> ChainResult:
        """The message is the user's question, or the bot's clarifying question answered."""
        settings = self.settings
        private = chat_kind(message.chat) == "private"
        stream = AnswerStream(
            bot,
            message.chat.id,
            private=private,
            interval_s=settings.draft_interval_s if private else settings.edit_interval_s,
            reply_to=None if private else message.message_id,
        )
        full = replace(
            request,
            history=talk.turns(),
            session_id=str(message.chat.id),
            run_key=f"{message.chat.id}:{message.message_id}:{request.clarification or ''}",
            on_delta=stream.on_delta,
        )
        try:
            async with ChatActionSender.typing(chat_id=message.chat.id, bot=bot), self.slots:
                result = await self.chain.run(full)
        finally:
            await stream.stop()
        markup = None
        if result.kind is ResultKind.ANSWER:
            markup = feedback_buttons(result.trace_id)
        elif result.kind is ResultKind.CLARIFY:
            markup = option_buttons(result.options)
        if result.kind is ResultKind.ERROR:
            log.warning("chain error for chat %s: %s", message.chat.id, result.error)
        await stream.finish(result_messages(result), markup)
        if result.kind is ResultKind.ANSWER:
            asked = request.message
            if request.clarification:
                asked = f"{asked} ({request.clarification})"
            talk.remember(asked, result.text, settings.history_turns)
        return result


async def ask(
    message: Message,
    *,
    bot: Bot,
    state: FSMContext,
    answering: Answering,
    access: Access,
    limiter: RateLimiter,
) -> None:
    """Answer a question (feedback comments are taken by the feedback router first)."""
    question = await _addressed(message, bot)
    user = message.from_user
    if question is None or user is None:
        return
    talk = await conversation.load(state)
    wait = await limiter.wait_s(user.id)
    if wait > 0:
        await message.answer(t("rate_limited", user, seconds=max(1, round(wait))))
        return
    scope = search_scope(access, talk, user.id, message.chat)
    if not scope:
        await message.answer(t("no_access", user))
        return
    request = ChainRequest(question, scope, user_id=str(user.id))
    result = await answering.run(message, bot, request, talk)
    if result.kind is ResultKind.CLARIFY:
        talk.question, talk.options = question, result.options
    await conversation.save(state, talk)


async def clarified(
    query: CallbackQuery,
    *,
    callback_data: ClarifyOption,
    bot: Bot,
    state: FSMContext,
    answering: Answering,
    access: Access,
) -> None:
    """Continue the pending question with the option pressed."""
    talk = await conversation.load(state)
    message = query.message
    index = callback_data.index
    if (
        talk.question is None
        or not 0 <= index < len(talk.options)
        or not isinstance(message, Message)
    ):
        await query.answer(t("option_gone", query.from_user), show_alert=True)
        return
    option, question = talk.options[index], talk.question
    talk.question, talk.options = None, []
    await query.answer(option)
    await message.edit_reply_markup(reply_markup=None)
    scope = search_scope(access, talk, query.from_user.id, message.chat)
    request = ChainRequest(question, scope, user_id=str(query.from_user.id), clarification=option)
    await answering.run(message, bot, request, talk)
    await conversation.save(state, talk)


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.message.register(ask, F.text)
    built.callback_query.register(clarified, ClarifyOption.filter())
    return built
