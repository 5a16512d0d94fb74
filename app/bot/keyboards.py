"""Inline buttons and their callback data (each under Telegram's 64-byte limit)."""

from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from app.bot.access import CollectionConfig


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
