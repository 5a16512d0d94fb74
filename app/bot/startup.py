"""Getting the bot going with Telegram: who it is, its command menus per language, and the
way in (long polling, or the webhook's registration); each start-up call retried with backoff
while Telegram is unreachable, one log line per failed attempt and no traceback."""

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
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
from app.settings import LLMSettings

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# The command menu, in this order; descriptions are the texts' cmd_<command>.
COMMANDS = ("start", "new", "collection", "docs", "gaps", "help")


class TelegramStartError(AppError):
    """Telegram refuses the bot at start (a wrong token): retrying would not help."""


class LLMStartError(AppError):
    """The LLM server refuses the bot's key at start: retrying would not help."""


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


async def wait_for_llm(llm: LLMSettings, settings: BotSettings) -> bool:
    """Wait until the LLM server lists its models (vLLM does once the model is loaded), so
    the first questions get answers, not apologies: retried with the start-up backoff for
    BOT_LLM_WAIT_S at most, one log line per attempt. True when it is ready; False with no
    server (the embedded model) or after the wait, when the bot starts anyway. A refused
    LLM_API_KEY raises LLMStartError."""
    if not llm.base_url or settings.llm_wait_s <= 0:
        return False
    url = llm.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {llm.api_key.get_secret_value()}"} if llm.api_key else {}
    timeout = aiohttp.ClientTimeout(total=llm.connect_timeout_s + 5, connect=llm.connect_timeout_s)
    deadline = time.monotonic() + settings.llm_wait_s
    delay, attempt = settings.start_retry_s, 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            attempt += 1
            problem = await _llm_problem(session, url, headers, llm.model)
            if problem is None:
                log.info("LLM server %s is ready", llm.base_url)
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "LLM server %s not ready after %.0f s (%s): starting anyway, questions "
                    "get an apology until it is",
                    llm.base_url,
                    settings.llm_wait_s,
                    problem,
                )
                return False
            wait = min(delay, left)
            log.warning(
                "LLM server not ready at start (attempt %s): %s; retrying in %.1f s",
                attempt,
                problem,
                wait,
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, settings.start_retry_max_s)


async def _llm_problem(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], model: str
) -> str | None:
    """Why the server is not ready yet (None: it is); LLMStartError when it refuses the key."""
    try:
        async with session.get(url, headers=headers) as response:
            if response.status in (401, 403):
                raise LLMStartError(
                    f"the LLM server refuses LLM_API_KEY (HTTP {response.status} from {url})"
                )
            if response.status != 200:
                return f"HTTP {response.status} from {url}"
            body = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return f"{type(exc).__name__} from {url}: {exc}" if str(exc) else type(exc).__name__
    data = body.get("data") if isinstance(body, dict) else None
    served = [str(m.get("id")) for m in data or [] if isinstance(m, dict)]
    if model and served and model not in served:
        log.warning("LLM_MODEL %r is not among the served models %s", model, served)
    return None


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


async def freeze_heap() -> None:
    """Move what start-up built (models, libraries, clients) out of the garbage collector's
    sight: a full collection otherwise walks it all, and stopped every user for 0.4 s on 2
    cores (bench/bot_load.py; after this, a few ms)."""
    gc.collect()
    gc.freeze()
