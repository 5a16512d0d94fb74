"""The one error handler (registered on the Dispatcher, so it sees every router's errors): the
user gets a short apology, the log gets the details; no stack trace ever reaches a chat."""

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent, Message

from app.bot.texts import t

log = logging.getLogger(__name__)


async def on_error(event: ErrorEvent, bot: Bot) -> bool:
    """Log the failure with the update, and apologise in the chat it came from."""
    update = event.update
    log.error(
        "update %s failed: %s",
        update.update_id,
        event.exception,
        exc_info=(type(event.exception), event.exception, event.exception.__traceback__),
    )
    message = update.message or (update.callback_query.message if update.callback_query else None)
    user = update.message.from_user if update.message else None
    if user is None and update.callback_query is not None:
        user = update.callback_query.from_user
    if message is not None:
        try:
            # In the forum topic of the question, as the answer would have been.
            thread = None
            if isinstance(message, Message) and message.is_topic_message:
                thread = message.message_thread_id
            await bot.send_message(message.chat.id, t("error", user), message_thread_id=thread)
        except TelegramAPIError as exc:
            log.warning("could not send the apology to chat %s: %s", message.chat.id, exc)
    return True
