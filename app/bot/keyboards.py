"""Inline buttons and their callback data (each under Telegram's 64-byte limit)."""

import uuid
from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from app.bot.access import CollectionConfig
from app.chain.types import SourceRef


class ChooseCollection(CallbackData, prefix="col"):
    """Pick the collection to ask (by its position in the collections file)."""

    index: int


class Feedback(CallbackData, prefix="fb"):
    """Thumbs up or down on the answer of one trace."""

    trace: str
    up: bool


class ClarifyOption(CallbackData, prefix="cl"):
    """One option of a clarifying question (the options are kept in the chat's state)."""

    index: int


class UploadTarget(CallbackData, prefix="up"):
    """The collection pending uploads go to."""

    index: int


class ListDocs(CallbackData, prefix="docs"):
    """Which collection's documents to list."""

    index: int


class ConfirmDelete(CallbackData, prefix="del"):
    """Confirm or cancel the pending deletion."""

    yes: bool


def collection_buttons(
    collections: Sequence[tuple[int, CollectionConfig]],
    factory: type[ChooseCollection] | type[UploadTarget] | type[ListDocs],
) -> InlineKeyboardMarkup:
    """One button per collection, each on its own row."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=config.label, callback_data=factory(index=i).pack())]
            for i, config in collections
        ]
    )


def feedback_buttons(trace_id: str) -> InlineKeyboardMarkup:
    """👍 and 👎 under an answer."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="👍", callback_data=Feedback(trace=trace_id, up=True).pack()
                ),
                InlineKeyboardButton(
                    text="👎", callback_data=Feedback(trace=trace_id, up=False).pack()
                ),
            ]
        ]
    )


def option_buttons(options: Sequence[str]) -> InlineKeyboardMarkup:
    """The options of a clarifying question, one per row."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=option[:64], callback_data=ClarifyOption(index=i).pack())]
            for i, option in enumerate(options)
        ]
    )


def confirm_buttons(yes: str, no: str) -> InlineKeyboardMarkup:
    """Yes / no for a deletion."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=yes, callback_data=ConfirmDelete(yes=True).pack()),
                InlineKeyboardButton(text=no, callback_data=ConfirmDelete(yes=False).pack()),
            ]
        ]
    )


class FreshAnswer(CallbackData, prefix="fresh"):
    """Answer the question of a cached answer again, past the cache (what was asked is noted
    with the message the button is on)."""

    go: bool = True


def with_fresh(markup: InlineKeyboardMarkup | None, label: str) -> InlineKeyboardMarkup:
    """A "Fresh answer" row under a cached answer's buttons."""
    button = InlineKeyboardButton(text=label, callback_data=FreshAnswer().pack())
    return InlineKeyboardMarkup(
        inline_keyboard=[*(markup.inline_keyboard if markup else []), [button]]
    )


class OpenSource(CallbackData, prefix="src"):
    """Open a cited source: the point id of its best chunk (32 hex digits, no collection:
    the press looks it up only in what the chat may read then)."""

    point: str


# Source buttons per row ("[1]" ... "[5]").
_SOURCES_PER_ROW = 5


def with_sources(
    markup: InlineKeyboardMarkup | None, sources: Sequence[SourceRef]
) -> InlineKeyboardMarkup | None:
    """Rows of "[n]" buttons that open the cited sources, below the markup's own rows."""
    buttons = [
        InlineKeyboardButton(
            text=f"[{source.n}]",
            callback_data=OpenSource(point=uuid.UUID(source.point_id).hex).pack(),
        )
        for source in sources
        if source.point_id
    ]
    if not buttons:
        return markup
    rows = [buttons[i : i + _SOURCES_PER_ROW] for i in range(0, len(buttons), _SOURCES_PER_ROW)]
    return InlineKeyboardMarkup(
        inline_keyboard=[*(markup.inline_keyboard if markup else []), *rows]
    )


class AnswerGap(CallbackData, prefix="gap"):
    """Answer one of the gaps listed in the message (what they are is noted with it)."""

    index: int


def answer_gap_buttons(count: int, label: str = "Answer {n}") -> InlineKeyboardMarkup:
    """One "Answer n" button per listed gap, three to a row."""
    buttons = [
        InlineKeyboardButton(text=label.format(n=i + 1), callback_data=AnswerGap(index=i).pack())
        for i in range(count)
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons[i : i + 3] for i in range(0, count, 3)])


# The knowledge loop's buttons (app/loop, handlers/loop.py): cards are found by their id.
class Escalate(CallbackData, prefix="esc"):
    """Ask an expert (what was asked is noted with the message the button is on)."""

    go: bool = True


class SaveReply(CallbackData, prefix="kbsave"):
    """Save an expert's answer (the n-th reply to the card) to the knowledge base."""

    card: str
    n: int


class ExpertRated(CallbackData, prefix="xfb"):
    """👍/👎 on an expert's relayed answer."""

    card: str
    up: bool


class Review(CallbackData, prefix="rv"):
    """A review card's button: "gold" (add to the golden set), "escalate" or "done"."""

    card: str
    action: str


def single_button(text: str, data: CallbackData) -> InlineKeyboardMarkup:
    """One button."""
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=text, callback_data=data.pack())]]
    )


def expert_rating_buttons(card: str) -> InlineKeyboardMarkup:
    """👍 and 👎 under an expert's answer."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="👍", callback_data=ExpertRated(card=card, up=True).pack()
                ),
                InlineKeyboardButton(
                    text="👎", callback_data=ExpertRated(card=card, up=False).pack()
                ),
            ]
        ]
    )


def review_buttons(card: str, labels: tuple[str, str, str]) -> InlineKeyboardMarkup:
    """Add to golden set / Escalate to owners / Done under a review card."""
    actions = ("gold", "escalate", "done")
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=label, callback_data=Review(card=card, action=a).pack())]
            for label, a in zip(labels, actions, strict=True)
        ]
    )
