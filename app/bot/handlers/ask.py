"""Questions: a text message (in groups, one that mentions or replies to the bot) runs the
chain with the conversation's history and collection; a clarification option continues it.

The conversation's lock is held only to read-modify-write its state, never across the chain
run: the run works on a snapshot, and its outcome is applied to the state as it is after the
run (so a second question, a collection switch or /new meanwhile is neither lost nor blocked).
"""

import asyncio
import contextlib
import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from aiogram import Bot, F, Router
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    MessageGenerationStopped,
    ReplyParameters,
    User,
)
from aiogram.utils.chat_action import ChatActionSender

from app.bot import conversation
from app.bot.access import Access
from app.bot.keyboards import (
    ClarifyOption,
    FreshAnswer,
    feedback_buttons,
    option_buttons,
    with_fresh,
    with_sources,
)
from app.bot.limits import RateLimiter
from app.bot.locks import ConversationLocks
from app.bot.render import LIMIT, result_messages, rich_answer
from app.bot.scope import chat_kind, search_scope
from app.bot.settings import BotSettings
from app.bot.streaming import LONG_QUESTION, AnswerStream, RichSupport, reply_to
from app.bot.texts import t
from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult, ResultKind
from app.loop.records import GapRecord, LoopRecords, Outcome, note_gap

log = logging.getLogger(__name__)
# Applies a chain result to the conversation (under its lock).
Remember = Callable[[ChainResult], Awaitable[None]]


def _without_mention(message: Message, me: User) -> str | None:
    """The text with the bot's mention cut out (a mention entity of @botname, or a text
    mention of the bot); None when the message does not mention the bot."""
    raw = message.text or ""
    name = f"@{me.username}".lower() if me.username else None
    for entity in message.entities or []:
        ours = (entity.type == "mention" and entity.extract_from(raw).lower() == name) or (
            entity.type == "text_mention" and entity.user is not None and entity.user.id == me.id
        )
        if ours:
            # Entity offsets count UTF-16 code units.
            units = raw.encode("utf-16-le")
            before = units[: 2 * entity.offset].decode("utf-16-le")
            after = units[2 * (entity.offset + entity.length) :].decode("utf-16-le")
            return f"{before.rstrip()} {after.lstrip()}".strip(" ,")
    return None


async def _addressed(message: Message, bot: Bot) -> str | None:
    """The question in the message, or None when it is not for the bot (groups: only when
    mentioned or replied to)."""
    text = (message.text or "").strip()
    if not text or text.startswith("/"):
        return None
    me = await bot.me()
    stripped = _without_mention(message, me)
    if stripped is not None:
        return stripped or None
    if chat_kind(message.chat) == "private":
        return text
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == me.id:
        return text
    return None


def thread_of(message: Message) -> int | None:
    """The forum topic of a message (in groups and in private chats with topics)."""
    return message.message_thread_id if message.is_topic_message else None


@dataclass
class Answering:
    """Runs the chain for a chat: typing shown, the answer streamed (with a stop button in
    private chats), at most N runs at once (the rest wait), the result sent with its buttons."""

    chain: Chain
    slots: asyncio.Semaphore
    settings: BotSettings
    # Runs a stop button can end: (chat id, draft id) -> set when the user pressed it.
    _stops: dict[tuple[int, int], asyncio.Event] = field(default_factory=dict)
    # The newest question per chat: an answer that arrives after a newer question quotes its own.
    _newest: dict[int, int] = field(default_factory=dict)
    # Runs per chat now: with several, an answer quotes the question it answers.
    _running: dict[int, int] = field(default_factory=dict)
    # Where rich messages go, learnt once per process (and per chat type).
    _rich: RichSupport = field(init=False)

    def __post_init__(self) -> None:
        self._rich = RichSupport(enabled=self.settings.rich_messages == "auto")

    def stop(self, chat_id: int, draft_id: int) -> bool:
        """End the run streaming that draft (False when no such run is going on here)."""
        stopped = self._stops.get((chat_id, draft_id))
        if stopped is not None:
            stopped.set()
        return stopped is not None

    async def run(
        self,
        message: Message,
        bot: Bot,
        user: User,
        request: ChainRequest,
        storage: BaseStorage,
        *,
        remember: Remember | None = None,
    ) -> ChainResult | None:
        """The message is the user's question, or the bot's clarifying question answered;
        None when the user stopped the run. remember applies the result to the conversation
        before the final message goes out, so a follow-up the user sends on seeing it always
        finds this turn in the history."""
        chat_id = message.chat.id
        private = chat_kind(message.chat) == "private"
        thread_id = thread_of(message)
        if private:
            self._newest[chat_id] = max(self._newest.get(chat_id, 0), message.message_id)
        self._running[chat_id] = self._running.get(chat_id, 0) + 1
        stream = AnswerStream(
            bot,
            chat_id,
            private=private,
            interval_s=self.settings.draft_interval_s if private else self.settings.edit_interval_s,
            reply=None if private else self._reply(message, request),
            thread_id=thread_id,
            chat_type=message.chat.type,
            rich=self._rich,
        )
        session = f"{chat_id}:{thread_id}" if thread_id else str(chat_id)
        full = replace(
            request,
            session_id=session,
            run_key=f"{chat_id}:{message.message_id}:{request.clarification or ''}",
            on_delta=stream.on_delta,
        )
        key = (chat_id, stream.draft_id)
        stopped = self._stops[key] = asyncio.Event()
        try:
            result = await self._generate(full, bot, chat_id, thread_id, stopped)
        finally:
            del self._stops[key]
            await stream.stop()
            self._running[chat_id] -= 1
            if not self._running[chat_id]:
                del self._running[chat_id]
        if private and self._newest.get(chat_id, 0) > message.message_id:
            stream.reply = self._reply(message, request, crowded=True)
        if result is None:
            await stream.finish([_stopped_text(stream.written, user)])
            return None
        markup = None
        if result.kind is ResultKind.ANSWER:
            markup = with_sources(feedback_buttons(result.trace_id), result.sources)
            if result.cached:
                markup = with_fresh(markup, t("fresh_answer", user))
        elif result.kind is ResultKind.CLARIFY:
            markup = option_buttons(result.options)
        if result.kind is ResultKind.ERROR:
            log.warning("chain error for chat %s: %s", chat_id, result.error)
        if remember is not None:
            await remember(result)
        ids = await stream.finish(result_messages(result), markup, rich_answer(result))
        if result.kind is ResultKind.ANSWER:
            # Reactions on any part of the answer rate it; a 👎 records what was asked.
            record = {
                "trace": result.trace_id,
                # Who asked: `python -m app forget-user` finds the records of a person by it.
                "asker": user.id,
                "question": request.message,
                "query": result.query,
                # The answer cache's entry: a 👎 evicts it.
                "cache": result.cache_entry,
                "collections": list(request.collections),
                "language": result.language,
            }
            await conversation.mark_messages(storage, bot.id, chat_id, ids, record)
        return result

    def _reply(
        self, message: Message, request: ChainRequest, *, crowded: bool = False
    ) -> ReplyParameters:
        """A reply to the question, quoting it where that tells which question this answers: a
        long one, or one of several at once (never a clarification: its message is the bot's)."""
        text = message.text or ""
        crowded = crowded or self._running.get(message.chat.id, 0) > 1
        if request.clarification or not (crowded or len(request.message) > LONG_QUESTION):
            return reply_to(message.message_id)
        # The quote must be a substring of the message: the question without a leading mention.
        return reply_to(message.message_id, request.message if request.message in text else text)

    async def _generate(
        self,
        request: ChainRequest,
        bot: Bot,
        chat_id: int,
        thread_id: int | None,
        stopped: asyncio.Event,
    ) -> ChainResult | None:
        """The chain's result, or None when stopped first (the run is cancelled)."""

        async def work() -> ChainResult:
            typing = ChatActionSender.typing(chat_id=chat_id, bot=bot, message_thread_id=thread_id)
            async with typing, self.slots:
                return await self.chain.run(request)

        run = asyncio.create_task(work(), name=f"chain-{chat_id}")
        pressed = asyncio.create_task(stopped.wait(), name=f"stop-{chat_id}")
        try:
            await asyncio.wait({run, pressed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pressed.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        return None if run.cancelled() else run.result()


def _stopped_text(written: str, user: User) -> str:
    """What was written before the stop button, marked as stopped."""
    note = f"<i>{html.escape(t('stopped', user))}</i>"
    if not written:
        return note
    return f"{html.escape(written[: LIMIT - 100])}\n\n{note}"


def _record(
    talk: conversation.Conversation,
    epoch: int,
    request: ChainRequest,
    result: ChainResult,
    keep_turns: int,
) -> str | None:
    """Apply a run's outcome to the conversation as it is now; returns a clarifying question's
    question that this one leaves unanswered (the user asked something else instead)."""
    if talk.epoch != epoch:
        return None  # /new while it ran: the fresh conversation starts without it
    abandoned = talk.question if not request.clarification else None
    if result.kind is ResultKind.ANSWER:
        asked = request.message
        if request.clarification:
            asked = f"{asked} ({request.clarification})"
        talk.remember(asked, result.text, keep_turns)
    elif result.kind is ResultKind.CLARIFY:
        talk.question, talk.options = request.message, list(result.options)
        return abandoned if abandoned != request.message else None
    if abandoned is not None:
        talk.question, talk.options = None, []
    return abandoned


async def _note(
    loop: LoopRecords | None,
    user: User,
    request: ChainRequest,
    result: ChainResult,
    abandoned: str | None,
) -> None:
    """The knowledge loop's records: a question not found, or a clarification left open."""
    if result.kind is ResultKind.NOT_FOUND:
        await note_gap(loop, _gap(user, request.message, request, result, Outcome.NOT_FOUND))
    if abandoned is not None:
        await note_gap(loop, _gap(user, abandoned, request, result, Outcome.ABANDONED))


def _gap(
    user: User, question: str, request: ChainRequest, result: ChainResult, outcome: Outcome
) -> GapRecord:
    return GapRecord(
        question=question,
        query=result.query if outcome is Outcome.NOT_FOUND else question,
        collections=tuple(request.collections),
        outcome=outcome,
        language=result.language,
        trace_id=result.trace_id,
        user=str(user.id),
    )


async def ask(
    message: Message,
    *,
    bot: Bot,
    state: FSMContext,
    fsm_storage: BaseStorage,
    answering: Answering,
    access: Access,
    limiter: RateLimiter,
    locks: ConversationLocks,
    loop: LoopRecords | None = None,
) -> None:
    """Answer a question (comments, i.e. replies to the bot's request for one, are taken by
    the feedback router first)."""
    question = await _addressed(message, bot)
    user = message.from_user
    if question is None or user is None:
        return
    wait = await limiter.wait_s(user.id)
    if wait > 0:
        await message.answer(t("rate_limited", user, seconds=max(1, round(wait))))
        return
    talk = await conversation.load(state)
    scope = await search_scope(access, talk, user.id, message.chat)
    if not scope:
        await message.answer(t("no_access", user))
        return
    request = ChainRequest(question, scope, history=talk.turns(), user_id=str(user.id))
    abandoned: list[str] = []

    async def remember(result: ChainResult) -> None:
        async with conversation.editing(state, locks) as latest:
            left = _record(latest, talk.epoch, request, result, answering.settings.history_turns)
        abandoned.extend([left] if left else [])

    result = await answering.run(message, bot, user, request, fsm_storage, remember=remember)
    if result is not None:
        await _note(loop, user, request, result, abandoned[0] if abandoned else None)


async def clarified(
    query: CallbackQuery,
    *,
    callback_data: ClarifyOption,
    bot: Bot,
    state: FSMContext,
    fsm_storage: BaseStorage,
    answering: Answering,
    access: Access,
    locks: ConversationLocks,
    loop: LoopRecords | None = None,
) -> None:
    """Continue the pending question with the option pressed (once: a second press finds it
    gone)."""
    message = query.message
    index = callback_data.index
    choice: tuple[str, str] | None = None
    async with conversation.editing(state, locks) as talk:
        if talk.question is not None and 0 <= index < len(talk.options):
            choice = (talk.question, talk.options[index])
            talk.question, talk.options = None, []
    if choice is None or not isinstance(message, Message):
        await query.answer(t("option_gone", query.from_user), show_alert=True)
        return
    question, option = choice
    await query.answer(option)
    await message.edit_reply_markup(reply_markup=None)
    user = query.from_user
    scope = await search_scope(access, talk, user.id, message.chat)
    request = ChainRequest(
        question, scope, history=talk.turns(), user_id=str(user.id), clarification=option
    )

    async def remember(result: ChainResult) -> None:
        async with conversation.editing(state, locks) as latest:
            _record(latest, talk.epoch, request, result, answering.settings.history_turns)

    result = await answering.run(message, bot, user, request, fsm_storage, remember=remember)
    if result is not None:
        await _note(loop, user, request, result, None)


async def fresh(
    query: CallbackQuery,
    *,
    bot: Bot,
    state: FSMContext,
    fsm_storage: BaseStorage,
    answering: Answering,
    access: Access,
) -> None:
    """ "Fresh answer" under a cached answer: its standalone question again, past the cache,
    in what the presser may read now; the new answer replaces the cached one."""
    message, user = query.message, query.from_user
    record: dict[str, object] = {}
    if isinstance(message, Message):
        record = await conversation.message_record(
            fsm_storage, bot.id, message.chat.id, message.message_id
        )
    if not isinstance(message, Message) or "query" not in record:
        await query.answer(t("option_gone", user), show_alert=True)
        return
    await query.answer()
    talk = await conversation.load(state)
    scope = await search_scope(access, talk, user.id, message.chat)
    if not scope:
        await message.answer(t("no_access", user))
        return
    # Pressed once: the button goes, the rating buttons and sources stay.
    keep = message.reply_markup.inline_keyboard[:-1] if message.reply_markup else []
    await message.edit_reply_markup(reply_markup=InlineKeyboardMarkup(inline_keyboard=keep))
    request = ChainRequest(str(record["query"]), scope, user_id=str(user.id), fresh=True)
    await answering.run(message, bot, user, request, fsm_storage)


async def stopped(event: MessageGenerationStopped, answering: Answering) -> None:
    """The stop button under a streamed draft: end that run (it answers with what it wrote)."""
    if not answering.stop(event.chat.id, event.draft_id):
        log.info("stop for draft %s in chat %s: no such run here", event.draft_id, event.chat.id)


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.message.register(ask, F.text)
    built.callback_query.register(clarified, ClarifyOption.filter())
    built.callback_query.register(fresh, FreshAnswer.filter())
    built.stopped_message_generation.register(stopped)
    return built
