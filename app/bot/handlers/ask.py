"""Questions: a text message (in groups, one that mentions or replies to the bot) runs the
chain with the chat's history and collection; a clarification option continues it."""

import asyncio
import logging

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


async def ask(
    message: Message,
    *,
    bot: Bot,
    state: FSMContext,
    chain: Chain,
    access: Access,
    limiter: RateLimiter,
    chain_slots: asyncio.Semaphore,
    bot_settings: BotSettings,
) -> None:
    """Answer a question (or take a pending feedback comment)."""
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
    result = await run_chain(
        message,
        bot=bot,
        chain=chain,
        chain_slots=chain_slots,
        settings=bot_settings,
        request=request,
        talk=talk,
    )
    if result.kind is ResultKind.CLARIFY:
        talk.question, talk.options = question, result.options
    elif result.kind is ResultKind.ANSWER:
        talk.remember(question, result.text, bot_settings.history_turns)
    await conversation.save(state, talk)


async def run_chain(
    message: Message,
    *,
    bot: Bot,
    chain: Chain,
    chain_slots: asyncio.Semaphore,
    settings: BotSettings,
    request: ChainRequest,
    talk: conversation.Conversation,
) -> ChainResult:
    """Run the chain with typing shown and the answer streamed, then send the result; the
    message is the user's question, or the bot's clarifying question that was answered."""
    private = chat_kind(message.chat) == "private"
    stream = AnswerStream(
        bot,
        message.chat.id,
        private=private,
        interval_s=settings.draft_interval_s if private else settings.edit_interval_s,
        reply_to=None if private else message.message_id,
    )
    full = ChainRequest(
        message=request.message,
        collections=request.collections,
        history=talk.turns(),
        user_id=request.user_id,
        session_id=str(message.chat.id),
        run_key=f"{message.chat.id}:{message.message_id}:{request.clarification or ''}",
        clarification=request.clarification,
        on_delta=stream.on_delta,
    )
    try:
        async with ChatActionSender.typing(chat_id=message.chat.id, bot=bot), chain_slots:
            result = await chain.run(full)
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
    return result


async def clarified(
    query: CallbackQuery,
    *,
    callback_data: ClarifyOption,
    bot: Bot,
    state: FSMContext,
    chain: Chain,
    access: Access,
    chain_slots: asyncio.Semaphore,
    bot_settings: BotSettings,
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
    result = await run_chain(
        message,
        bot=bot,
        chain=chain,
        chain_slots=chain_slots,
        settings=bot_settings,
        request=request,
        talk=talk,
    )
    if result.kind is ResultKind.ANSWER:
        talk.remember(f"{question} ({option})", result.text, bot_settings.history_turns)
    await conversation.save(state, talk)


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.message.register(ask, F.text)
    built.callback_query.register(clarified, ClarifyOption.filter())
    return built
