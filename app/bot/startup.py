"""Getting the bot going with Telegram: who it is, its command menus per language, and the
way in (long polling, or the webhook's registration); each start-up call retried with backoff
while Telegram is unreachable, one log line per failed attempt and no traceback."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BotCommand

from app.bot.settings import BotSettings
from app.bot.texts import TABLES, text_in
from app.errors import AppError

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# The command menu, in this order; descriptions are the texts' cmd_<command>.
COMMANDS = ("start", "new", "collection", "docs", "gaps", "help")


class TelegramStartError(AppError):
    """Telegram refuses the bot at start (a wrong token): retrying would not help."""


def commands(language: str) -> list[BotCommand]:
    """The command menu in a language of the texts."""
    return [BotCommand(command=c, description=text_in(language, f"cmd_{c}")) for c in COMMANDS]


async def when_reachable(what: str, call: Callable[[], Awaitable[_T]], settings: BotSettings) -> _T:
    """A start-up call to Telegram, retried while Telegram is unreachable or failing, after
    BOT_START_RETRY_S seconds doubling up to BOT_START_RETRY_MAX_S: one log line per failed
    attempt, no traceback. A refused token raises TelegramStartError at once."""
    delay, attempt = settings.start_retry_s, 0
    while True:
        attempt += 1
        try:
            return await call()
        except TelegramUnauthorizedError as exc:
            raise TelegramStartError(f"Telegram refuses BOT_TOKEN ({what}): {exc}") from None
        except TelegramRetryAfter as exc:
            wait, problem = max(float(exc.retry_after), delay), f"rate limited: {exc}"
        except (TelegramNetworkError, TelegramServerError) as exc:
            wait, problem = delay, str(exc)
        log.warning(
            "Telegram unreachable at start (%s, attempt %s): %s; retrying in %.1f s",
            what,
            attempt,
            problem,
            wait,
        )
        await asyncio.sleep(wait)
        delay = min(delay * 2, settings.start_retry_max_s)


async def set_up_bot(bot: Bot, settings: BotSettings) -> None:
    """Who the bot is (aiogram caches it) and its command menus: English by default, and one
    per other language of the texts for users whose Telegram speaks it."""
    me = await when_reachable("getMe", bot.me, settings)
    log.info("running as @%s", me.username)
    for language in TABLES:
        menu, code = commands(language), None if language == "en" else language
        await when_reachable(
            "setMyCommands",
            lambda: bot.set_my_commands(menu, language_code=code),  # noqa: B023 - awaited here
            settings,
        )


async def poll(
    dp: Dispatcher,
    bot: Bot,
    settings: BotSettings,
    *,
    handle_signals: bool = True,
    polling_timeout: int = 10,
) -> None:
    """Long-poll until stopped, for the update types the routers handle (reactions too, once
    a router takes them)."""
    await set_up_bot(bot, settings)
    await when_reachable(
        "deleteWebhook", lambda: bot.delete_webhook(drop_pending_updates=False), settings
    )
    log.info("polling for updates")
    await dp.start_polling(
        bot,
        handle_signals=handle_signals,
        polling_timeout=polling_timeout,
        allowed_updates=dp.resolve_used_update_types(),
    )
