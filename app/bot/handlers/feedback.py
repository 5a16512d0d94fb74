"""Feedback: 👍/👎 under an answer, or as a reaction on it, become a Langfuse score on that
answer's trace, one per answer and user. A 👎 button asks for a comment with a ForceReply; only
a reply to that request is a comment (any other message is a question), so it works in groups
too. A removed reaction keeps the score: Langfuse keeps a score until it is replaced, and
taking a reaction back is no verdict on the answer."""

import html
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import (
    CallbackQuery,
    ForceReply,
    Message,
    MessageReactionUpdated,
    ReactionTypeEmoji,
    ReactionTypeUnion,
    User,
)

from app.bot import conversation
from app.bot.keyboards import Feedback
from app.bot.texts import t
from app.cache import AnswerCache
from app.loop.cards import Card
from app.loop.escalation import Escalations
from app.loop.records import GapRecord, LoopRecords, Outcome, note_gap
from app.loop.review import Reviews
from app.tracing import Tracer

SCORE = "user_feedback"
UP, DOWN = "👍", "👎"


def score_id(trace_id: str, user_id: int) -> str:
    """One feedback score per answer and user: pressing again, reacting or commenting updates
    it, and two people in a group each have their own."""
    return f"{trace_id}-feedback-{user_id}"


def _score(tracer: Tracer, trace_id: str, user: User, up: bool, comment: str | None = None) -> None:
    tracer.score(
        trace_id,
        SCORE,
        1.0 if up else 0.0,
        comment=comment,
        boolean=True,
        score_id=score_id(trace_id, user.id),
    )


async def rated(
    query: CallbackQuery,
    *,
    callback_data: Feedback,
    tracer: Tracer,
    bot: Bot,
    fsm_storage: BaseStorage,
    loop: LoopRecords | None = None,
    escalations: Escalations | None = None,
    reviews: Reviews | None = None,
    cache: AnswerCache | None = None,
) -> None:
    """Record the rating; after a thumbs-down, ask what was wrong (a ForceReply), post a
    review card (BOT_REVIEW_CHAT) and offer to ask an expert (when the collections have some)."""
    user, message = query.from_user, query.message
    _score(tracer, callback_data.trace, user, callback_data.up)
    await query.answer(t("thanks", user))
    if not isinstance(message, Message):
        return
    private = message.chat.type == "private"
    if private:
        # In a group the buttons stay: everyone rates for themselves.
        await message.edit_reply_markup(reply_markup=None)
    if callback_data.up:
        return
    text = html.escape(t("ask_comment", user))
    if not private:
        # selective: the reply field opens for the user mentioned only.
        name = html.escape(user.first_name)
        text = f'<a href="tg://user?id={user.id}">{name}</a>, {text}'
    prompt = await message.answer(
        text,
        parse_mode="HTML",
        reply_markup=ForceReply(
            input_field_placeholder=t("comment_placeholder", user)[:64], selective=True
        ),
    )
    record: dict[str, object] = {"trace": callback_data.trace, "comment_by": user.id}
    noted, card = await _rated_down(
        RatedDown(loop, escalations, reviews, fsm_storage, bot, cache),
        chat_id=message.chat.id,
        message_id=message.message_id,
        user=user,
    )
    if card is not None:
        record["review"] = card.id  # the comment joins the review card
    await conversation.mark_messages(
        fsm_storage, bot.id, message.chat.id, [prompt.message_id], record
    )
    if noted is not None and escalations is not None:
        await escalations.offer(bot, message, noted, user, fsm_storage)


async def _comment_request(
    message: Message, bot: Bot, fsm_storage: BaseStorage
) -> dict[str, str] | bool:
    """A filter: the message replies to the bot's request for a comment from this user (the
    storage is read only for replies to the bot). Gives the handler comment_trace."""
    record = await conversation.replied_record(message, bot, fsm_storage)
    if record is None or record.get("comment_by") != record["from"]:
        return False
    return {"comment_trace": str(record["trace"]), "comment_review": str(record.get("review", ""))}


async def skip(message: Message, bot: Bot, fsm_storage: BaseStorage) -> None:
    """No comment after all (the request, if this replies to it, is closed)."""
    replied = message.reply_to_message
    if replied is not None:
        await conversation.forget_message(fsm_storage, bot.id, message.chat.id, replied.message_id)
    await message.answer(t("skipped", message.from_user))


async def comment(
    message: Message,
    *,
    comment_trace: str,
    tracer: Tracer,
    bot: Bot,
    fsm_storage: BaseStorage,
    comment_review: str | None = None,
    reviews: Reviews | None = None,
) -> None:
    """A reply to the request: the comment of that answer's score (once), and of its review
    card."""
    user, replied = message.from_user, message.reply_to_message
    if user is None or replied is None:
        return
    text = " ".join((message.text or "").split())[:500]
    _score(tracer, comment_trace, user, up=False, comment=text)
    await conversation.forget_message(fsm_storage, bot.id, message.chat.id, replied.message_id)
    if reviews is not None and comment_review:
        await reviews.add_comment(bot, comment_review, text)
    await message.answer(t("comment_saved", user))


def _vote(reactions: list[ReactionTypeUnion]) -> set[str]:
    return {
        r.emoji for r in reactions if isinstance(r, ReactionTypeEmoji) and r.emoji in (UP, DOWN)
    }


async def reacted(
    event: MessageReactionUpdated,
    *,
    tracer: Tracer,
    bot: Bot,
    fsm_storage: BaseStorage,
    loop: LoopRecords | None = None,
    escalations: Escalations | None = None,
    reviews: Reviews | None = None,
    cache: AnswerCache | None = None,
) -> None:
    """A 👍 or 👎 reaction on an answer: the same score as the buttons (a change updates it);
    a 👎 also posts a review card."""
    user = event.user
    added = _vote(event.new_reaction) - _vote(event.old_reaction)
    if user is None or len(added) != 1:
        return  # anonymous, removed, unrelated emoji, or both at once: nothing to record
    record = await conversation.message_record(fsm_storage, bot.id, event.chat.id, event.message_id)
    if "trace" not in record or "comment_by" in record:
        return  # not an answer (or the record expired)
    _score(tracer, str(record["trace"]), user, up=added == {UP})
    if added == {DOWN}:
        await _rated_down(
            RatedDown(loop, escalations, reviews, fsm_storage, bot, cache),
            chat_id=event.chat.id,
            message_id=event.message_id,
            user=user,
        )


@dataclass(frozen=True, slots=True)
class RatedDown:
    """What a thumbs-down reaches: the owners' gap records, the experts, the review chat."""

    loop: LoopRecords | None
    escalations: Escalations | None
    reviews: Reviews | None
    storage: BaseStorage
    bot: Bot
    # The answer cache: a disliked answer is not served again.
    cache: AnswerCache | None = None


async def _rated_down(
    to: RatedDown, *, chat_id: int, message_id: int, user: User
) -> tuple[dict[str, Any] | None, Card | None]:
    """A thumbs-down on an answer: what was asked becomes a gap for the owners, and a review
    card when there is a review chat. Returns what the answer's message noted (for an expert's
    card; None when the loop is off or it has expired) and the review card posted."""
    record = await conversation.message_record(to.storage, to.bot.id, chat_id, message_id)
    if to.cache is not None and record.get("cache"):
        await to.cache.evict(str(record["cache"]))
    if to.loop is not None and "question" in record:
        await note_gap(
            to.loop,
            GapRecord(
                question=str(record["question"]),
                query=str(record.get("query") or record["question"]),
                collections=tuple(record.get("collections") or ()),
                outcome=Outcome.THUMBS_DOWN,
                language=str(record.get("language") or "en"),
                trace_id=str(record.get("trace") or "") or None,
                user=str(user.id),
            ),
        )
    if to.escalations is None:
        return None, None
    noted = await to.escalations.noted_for(to.storage, to.bot.id, chat_id, record, user)
    if noted is None or to.reviews is None:
        return noted, None
    return noted, await to.reviews.post(to.bot, noted, chat_id)


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.callback_query.register(rated, Feedback.filter())
    built.message.register(skip, Command("skip"))
    built.message.register(comment, F.text, ~F.text.startswith("/"), _comment_request)
    built.message_reaction.register(reacted)
    return built
