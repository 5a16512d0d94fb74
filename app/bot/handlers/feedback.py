"""Feedback: 👍/👎 under an answer become a Langfuse score on that answer's trace; a 👎 invites
a one-line comment, stored as the score's comment."""

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from app.bot import conversation
from app.bot.keyboards import Feedback
from app.bot.texts import t
from app.tracing import Tracer

SCORE = "user_feedback"


def score_id(trace_id: str) -> str:
    """One feedback score per answer: pressing again, or commenting, updates it."""
    return f"{trace_id}-feedback"


class AwaitingComment(StatesGroup):
    """After a thumbs-down: the next line is the comment. A state, not only data, so the
    filter needs no storage read of its own (aiogram reads the state of every update)."""

    line = State()


async def rated(
    query: CallbackQuery, callback_data: Feedback, tracer: Tracer, state: FSMContext
) -> None:
    """Record the rating; after a thumbs-down, ask what was wrong."""
    trace_id = callback_data.trace
    tracer.score(
        trace_id, SCORE, 1.0 if callback_data.up else 0.0, boolean=True, score_id=score_id(trace_id)
    )
    await query.answer(t("thanks", query.from_user))
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
    # Comments are taken in private chats only: in a group the next line may be for others.
    message = query.message
    if not callback_data.up and isinstance(message, Message) and message.chat.type == "private":
        talk = await conversation.load(state)
        talk.comment_for = trace_id
        await conversation.save(state, talk)
        await state.set_state(AwaitingComment.line)
        await message.answer(t("ask_comment", query.from_user))


async def skip(message: Message, state: FSMContext) -> None:
    """No comment after all."""
    talk = await conversation.load(state)
    talk.comment_for = None
    await conversation.save(state, talk)
    await state.set_state(None)
    await message.answer(t("skipped", message.from_user))


async def comment(message: Message, tracer: Tracer, state: FSMContext) -> None:
    """The line after a thumbs-down: the comment of that answer's score."""
    talk = await conversation.load(state)
    trace_id = talk.comment_for
    talk.comment_for = None
    await conversation.save(state, talk)
    await state.set_state(None)
    if trace_id is None:
        return
    text = " ".join((message.text or "").split())[:500]
    tracer.score(trace_id, SCORE, 0.0, comment=text, boolean=True, score_id=score_id(trace_id))
    await message.answer(t("comment_saved", message.from_user))


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.callback_query.register(rated, Feedback.filter())
    built.message.register(skip, Command("skip"), StateFilter(AwaitingComment.line))
    built.message.register(
        comment, F.text, ~F.text.startswith("/"), StateFilter(AwaitingComment.line)
    )
    return built
