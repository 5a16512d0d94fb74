"""The knowledge loop's buttons and replies (the logic is in app/loop): "Ask an expert", an
expert's reply to a card, "Save to knowledge base", 👍/👎 on an expert's answer, and the review
chat's buttons and golden-set replies. Cards are found by the tag in the message replied to."""

from dataclasses import dataclass
from typing import Any

from aiogram import Bot, F, Router
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import CallbackQuery, Message, User

from app.bot import conversation
from app.bot.handlers.ask import Answering
from app.bot.keyboards import Escalate, ExpertRated, Review, SaveReply
from app.bot.texts import t
from app.chain.types import ChainRequest, ChainResult
from app.loop.cards import CardKind, tag_in
from app.loop.escalation import Escalations
from app.loop.review import Reviews


@dataclass
class LoopAnswering(Answering):
    """Answering that also tells the knowledge loop about each result: what a card needs of
    an answer (for a 👎 on it), and "Ask an expert" under "not found"."""

    escalations: Escalations | None = None

    async def run(
        self,
        message: Message,
        bot: Bot,
        user: User,
        request: ChainRequest,
        storage: BaseStorage,
        **options: Any,
    ) -> ChainResult | None:
        """Answering.run, then the loop's note of the result."""
        result = await super().run(message, bot, user, request, storage, **options)
        if result is not None and self.escalations is not None:
            await self.escalations.after_result(
                bot, message=message, user=user, request=request, result=result, storage=storage
            )
        return result


async def escalate(
    query: CallbackQuery,
    *,
    callback_data: Escalate,
    bot: Bot,
    fsm_storage: BaseStorage,
    escalations: Escalations | None = None,
) -> None:
    """ "Ask an expert" under "not found" or after a 👎: the card goes to the experts."""
    user, message = query.from_user, query.message
    if not isinstance(message, Message) or escalations is None:
        await query.answer(t("option_gone", user), show_alert=True)
        return
    record = await conversation.message_record(
        fsm_storage, bot.id, message.chat.id, message.message_id
    )
    noted = record.get("escalate")
    if not isinstance(noted, dict):
        await query.answer(t("option_gone", user), show_alert=True)
        return
    if noted.get("by") != user.id:
        await query.answer(t("expert_not_yours", user), show_alert=True)
        return
    if record.get("escalated"):
        await query.answer(t("expert_already_sent", user), show_alert=True)
        return
    card = escalations.card_of(noted, message.chat.id, CardKind.ESCALATION)
    if card is None:
        await query.answer(t("review_no_experts", user), show_alert=True)
        return
    # Noted before posting: a second press while it posts is told it is on its way.
    marked = {**record, "escalated": card.id}
    await conversation.mark_messages(
        fsm_storage, bot.id, message.chat.id, [message.message_id], marked
    )
    await query.answer()
    if not await escalations.escalate(bot, card):
        await conversation.mark_messages(
            fsm_storage, bot.id, message.chat.id, [message.message_id], record
        )
        await message.answer(t("expert_unreachable", user))
        return
    title = escalations.access.collections[card.collection].label
    await message.edit_reply_markup(reply_markup=None)
    await message.answer(t("expert_sent", user, title=title))


async def _card_reply(message: Message, bot: Bot) -> dict[str, Any] | bool:
    """A filter: the message replies to one of the bot's card messages (found by its tag)."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or message.from_user is None:
        return False
    if replied.from_user.id != (await bot.me()).id:
        return False
    found = tag_in(replied.text or replied.caption)
    if found is None:
        return False
    return {"card_kind": found[0], "card_id": found[1]}


async def card_reply(
    message: Message,
    *,
    card_kind: CardKind,
    card_id: str,
    bot: Bot,
    escalations: Escalations | None = None,
    reviews: Reviews | None = None,
) -> None:
    """An expert's answer to an escalation, or the correct answer for a review's golden item."""
    if card_kind is CardKind.ESCALATION and escalations is not None:
        await escalations.answer(bot, message, card_id)
    elif (
        card_kind is CardKind.REVIEW
        and reviews is not None
        and reviews.in_review_chat(message.chat.id)
    ):
        await reviews.gold(bot, message, card_id)


async def save_reply(
    query: CallbackQuery, *, callback_data: SaveReply, escalations: Escalations | None = None
) -> None:
    """ "Save to knowledge base" under an expert's delivered (or late) answer."""
    user, message = query.from_user, query.message
    if not isinstance(message, Message) or escalations is None:
        await query.answer(t("option_gone", user), show_alert=True)
        return
    await query.answer()
    saved, text = await escalations.save(callback_data.card, callback_data.n, user, message.chat.id)
    if saved:
        await message.edit_reply_markup(reply_markup=None)
    await message.answer(text)


async def expert_rated(
    query: CallbackQuery, *, callback_data: ExpertRated, escalations: Escalations | None = None
) -> None:
    """👍/👎 on an expert's answer: a score on the question's trace."""
    user, message = query.from_user, query.message
    if escalations is not None:
        card = await escalations.cards.get(callback_data.card)
        trace = card.trace_id if card is not None else None
        escalations.rated(callback_data.card, user, callback_data.up, trace)
    await query.answer(t("thanks", user))
    if isinstance(message, Message) and message.chat.type == "private":
        await message.edit_reply_markup(reply_markup=None)


async def review(
    query: CallbackQuery, *, callback_data: Review, bot: Bot, reviews: Reviews | None = None
) -> None:
    """The review card's buttons (in the review chat only)."""
    user, message = query.from_user, query.message
    if reviews is None or not isinstance(message, Message):
        await query.answer(t("option_gone", user), show_alert=True)
        return
    if not reviews.in_review_chat(message.chat.id):
        await query.answer(t("review_only", user), show_alert=True)
        return
    card = await reviews.cards.get(callback_data.card)
    if card is None:
        await query.answer(t("card_gone", user), show_alert=True)
        return
    if callback_data.action == "gold":
        await query.answer()
        await reviews.ask_gold(message, card, user)
    elif callback_data.action == "escalate":
        await query.answer(await reviews.escalate(bot, card.id, user), show_alert=True)
    else:
        await query.answer(await reviews.done(bot, card.id, user))


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.callback_query.register(escalate, Escalate.filter())
    built.callback_query.register(save_reply, SaveReply.filter())
    built.callback_query.register(expert_rated, ExpertRated.filter())
    built.callback_query.register(review, Review.filter())
    built.message.register(card_reply, F.text, ~F.text.startswith("/"), _card_reply)
    return built
