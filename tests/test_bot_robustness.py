"""The bot when things around it fail, through the fake Bot API with the real Dispatcher: a
download that fails (no token in the log), a Redis that hangs (an apology within seconds), an
LLM that ignores its regex (a failed step, not an answer), Telegram unreachable at start (retried,
one line per attempt); and what it registers with Telegram (command menus, allowed updates)."""

import asyncio
import io
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from pydantic import SecretStr

from app import logsafe
from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher, make_redis, make_storage, serve_webhook
from app.bot.limits import RedisRateLimiter
from app.bot.locks import MemoryLocks
from app.bot.settings import BotSettings
from app.bot.startup import TelegramStartError, poll, set_up_bot
from app.chain.chain import Chain
from app.prompts import PromptStore
from app.settings import ChainSettings, LangfuseSettings, LLMSettings
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, IngestorFactory, without_env
from tests.fakes.llm import ScriptedLLM
from tests.fakes.telegram_server import DOWNLOAD_METHOD, BotMessage, FakeTelegramServer

pytest_plugins = ["tests.fakes.telegram_server"]

READER, OWNER = 1, 111
COLLECTIONS = f"""
collections:
  - name: company
    title: Company handbook
    readers: everyone
    owners: [{OWNER}]
"""
APOLOGY = "something went wrong"


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Deps:
    """Builds the bot's dependencies on the sample documents, with one scripted LLM."""

    def __init__(self, chain: Chain, llm: ScriptedLLM, ingestor: Any, store: EdgeStore, path: Path):
        self.chain, self.llm, self.ingestor, self.store, self.path = (
            chain,
            llm,
            ingestor,
            store,
            path,
        )

    def __call__(self, settings: BotSettings, **extra: Any) -> BotDeps:
        access = load_collections(self.path, settings.admins)
        tracer = Tracer(None)
        return BotDeps(self.chain, access, self.ingestor, tracer, self.store, settings, **extra)


@pytest.fixture
async def make_deps(  # noqa: PLR0917 - pytest passes fixtures by name
    sample_store: EdgeStore,
    edge_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
    make_ingestor: IngestorFactory,
    tmp_path: Path,
) -> Deps:
    """Dependencies reading the samples; uploads go to a store of the test's own."""
    path = tmp_path / "collections.yaml"
    path.write_text(COLLECTIONS)
    llm = ScriptedLLM()
    chain = Chain(
        searcher=HybridSearcher(
            sample_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
        ),
        store=sample_store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=PromptStore(PROMPTS),
        tracer=Tracer(None),
        settings=without_env(ChainSettings),
    )
    return Deps(chain, llm, make_ingestor(edge_store, chunk_tokens=None), sample_store, path)


def bot_settings(telegram: FakeTelegramServer, **values: Any) -> BotSettings:
    """Settings for the fake server, short intervals."""
    defaults: dict[str, Any] = {"token": telegram.token, "draft_interval_s": 0.1}
    return without_env(BotSettings, **(defaults | values))


@asynccontextmanager
async def polling(telegram: FakeTelegramServer, dp: Dispatcher) -> AsyncIterator[Bot]:
    """The Dispatcher long-polling the fake server until the block ends."""
    bot = telegram.new_bot()
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    await telegram.wait_for_poll()
    try:
        yield bot
    finally:
        await dp.stop_polling()
        await task
        await bot.session.close()


async def bot_says(
    telegram: FakeTelegramServer, chat_id: int, text: str, wait_s: float
) -> BotMessage:
    """The bot's message in a chat containing text."""
    return await telegram.wait_for_message(
        chat_id, lambda m: text in (m.plain_text or ""), timeout=wait_s
    )


# -- secrets in logs ------------------------------------------------------------------------


@contextmanager
def root_log() -> Iterator[io.StringIO]:
    """What a root handler (as logging.basicConfig makes) writes, while the block runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_a_failed_download_logs_no_token(
    telegram_server: FakeTelegramServer, make_deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot_settings(telegram_server)
    token = telegram_server.token
    with root_log() as output:
        logsafe.install(logsafe.secrets_of(settings))
        async with polling(telegram_server, build_dispatcher(make_deps(settings))):
            telegram_server.fail_next(DOWNLOAD_METHOD, status=404)
            telegram_server.push_document(OWNER, "notes.md", b"# Notes\n\nSome text.")
            await bot_says(telegram_server, OWNER, APOLOGY, wait_s=10)
    download = telegram_server.calls(DOWNLOAD_METHOD)
    assert download
    assert download[0].status == 404
    logged = output.getvalue()
    assert "failed" in logged, logged
    assert "Traceback" in logged, logged
    assert "bot***" in logged, "the URL stays readable, with the token masked"
    for text in (logged, caplog.text, *telegram_server.texts(OWNER)):
        assert token not in (text or "")
        assert token.split(":")[1] not in (text or "")


@dataclass
class Composed:
    """Settings composed like app.settings.Settings."""

    llm: LLMSettings
    langfuse: LangfuseSettings


def test_secrets_of_settings_and_the_filter() -> None:
    settings = without_env(
        BotSettings,
        token="987654:AAH-secret-bot-token-value-1234567890",
        redis_url="redis://:redis-pass-77@redis:6379/0",
        webhook_url="https://bot.example.com/hook",
        webhook_secret="hook-secret-91",
    )
    llm = without_env(LLMSettings, api_key=SecretStr("sk-llm-key-123"))
    langfuse = without_env(LangfuseSettings, secret_key=SecretStr("sk-lf-secret-456"))
    found = logsafe.secrets_of(settings, Composed(llm, langfuse))
    assert {
        "987654:AAH-secret-bot-token-value-1234567890",
        "redis-pass-77",
        "hook-secret-91",
        "sk-llm-key-123",
        "sk-lf-secret-456",
    } <= found
    redact = logsafe.RedactSecrets(found)
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "call %s with %s failed", ("sk-llm-key-123", 7), None
    )
    try:
        raise RuntimeError("GET https://api.telegram.org/bot42:other-token-xyz/getMe")
    except RuntimeError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert redact.filter(record)
    text = logging.Formatter().format(record)
    assert "call *** with 7 failed" in text
    assert "bot***/getMe" in text
    assert "other-token" not in text
    assert "sk-llm" not in text
    assert redact.redact("redis://user:pw-x@host") == "redis://user:***@host"


# -- a Redis that hangs -----------------------------------------------------------------------


@asynccontextmanager
async def hanging_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections, reads, and never answers; yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hanging_redis_gets_the_apology_within_seconds(
    telegram_server: FakeTelegramServer, make_deps: Deps
) -> None:
    async with hanging_server() as port:
        settings = bot_settings(
            telegram_server, redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.5
        )
        redis = make_redis(settings)
        assert redis is not None
        storage = make_storage(settings, redis)
        # Locks in memory: the state and the rate limit are the Redis calls that must be bound
        # (the Redis locks guard each call themselves).
        limiter = RedisRateLimiter(redis, 10)
        deps = make_deps(settings, limiter=limiter, redis=redis, locks=MemoryLocks())
        try:
            async with polling(telegram_server, build_dispatcher(deps, storage)):
                asked = telegram_server.push_message(READER, "How do I connect to the VPN?")
                apology = await bot_says(telegram_server, READER, APOLOGY, wait_s=15)
        finally:
            await storage.close()
    # A Redis call: 0.5 s, and once more after a timeout; measured 91 s without a bound.
    assert apology.sent_at - asked.at < 3.0


# -- an LLM that ignores its regex ------------------------------------------------------------


async def test_an_answer_that_breaks_its_regex_is_a_failed_step(
    telegram_server: FakeTelegramServer, make_deps: Deps
) -> None:
    settings = bot_settings(telegram_server)
    deps = make_deps(settings)
    make_deps.llm.replies["answer"] = "Sure! Everything you need is in these documents."
    async with polling(telegram_server, build_dispatcher(deps)):
        telegram_server.push_message(READER, "How do I connect to the VPN?")
        await bot_says(telegram_server, READER, "could not write an answer", wait_s=30)
    assert make_deps.llm.steps().count("answer") == 2, "one retry, then the step has failed"
    shown = " ".join(m.plain_text or "" for m in telegram_server.sent_messages(READER))
    assert "Sure!" not in shown


# -- Telegram at start ------------------------------------------------------------------------


def start_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of failed start-up calls."""
    return [r for r in caplog.records if "unreachable at start" in r.getMessage()]


async def test_telegram_failing_at_start_is_retried_then_polled(
    telegram_server: FakeTelegramServer, make_deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot_settings(telegram_server, start_retry_s=0.01, start_retry_max_s=0.02)
    dp = build_dispatcher(make_deps(settings))
    bot = telegram_server.new_bot()
    telegram_server.fail_next("getMe", 2, status=502, description="Bad Gateway")
    telegram_server.fail_next("setMyCommands")
    telegram_server.fail_next("deleteWebhook")
    task = asyncio.create_task(poll(dp, bot, settings, handle_signals=False, polling_timeout=1))
    try:
        await telegram_server.wait_for_poll()
    finally:
        await dp.stop_polling()
        await task
        await bot.session.close()
    lines = start_lines(caplog)
    assert [r.getMessage().split(" (")[1].split(",")[0] for r in lines] == [
        "getMe",
        "getMe",
        "setMyCommands",
        "deleteWebhook",
    ]
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_telegram_unreachable_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = TelegramAPIServer.from_base(f"http://127.0.0.1:{free_port()}")
    bot = Bot("123456:TEST-token", session=AiohttpSession(api=api))
    settings = without_env(
        BotSettings, token="123456:TEST-token", start_retry_s=0.1, start_retry_max_s=0.4
    )
    task = asyncio.create_task(set_up_bot(bot, settings))
    started = time.monotonic()
    while len(start_lines(caplog)) < 4 and time.monotonic() - started < 10:  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # the log has no event to wait on
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await bot.session.close()
    lines = [r.getMessage() for r in start_lines(caplog)]
    assert len(lines) >= 4
    assert all("getMe" in line for line in lines)
    assert [line.rsplit("retrying in ", 1)[1] for line in lines[:4]] == [
        "0.1 s",
        "0.2 s",
        "0.4 s",
        "0.4 s",
    ]
    assert "123456:TEST-token" not in " ".join(lines)


async def test_a_refused_token_stops_the_start_at_once(
    telegram_server: FakeTelegramServer,
) -> None:
    bot = telegram_server.new_bot()
    await bot.session.close()
    api = TelegramAPIServer.from_base(telegram_server.base_url)
    wrong = Bot("654321:WRONG-token", session=AiohttpSession(api=api))
    settings = without_env(BotSettings, token="654321:WRONG-token", start_retry_s=0.01)
    with pytest.raises(TelegramStartError, match="BOT_TOKEN"):
        await set_up_bot(wrong, settings)
    await wrong.session.close()
    assert len(telegram_server.calls("getMe")) == 1


# -- what the bot registers -------------------------------------------------------------------


async def test_command_menus_per_language_and_allowed_updates(
    telegram_server: FakeTelegramServer, make_deps: Deps
) -> None:
    settings = bot_settings(telegram_server)
    dp = build_dispatcher(make_deps(settings))
    bot = telegram_server.new_bot()
    task = asyncio.create_task(poll(dp, bot, settings, handle_signals=False, polling_timeout=1))
    try:
        await telegram_server.wait_for_poll()
    finally:
        await dp.stop_polling()
        await task
        await bot.session.close()
    english, russian = telegram_server.commands_for(""), telegram_server.commands_for("ru")
    assert [c["command"] for c in english] == ["start", "new", "collection", "docs", "gaps", "help"]
    assert [c["command"] for c in russian] == [c["command"] for c in english]
    assert english[-1]["description"] == "how to use me"
    assert all(re.search("[а-я]", c["description"]) for c in russian)  # noqa: RUF001
    used = dp.resolve_used_update_types()
    assert {"message", "callback_query"} <= set(used)
    polls = telegram_server.calls("getUpdates")
    assert polls
    assert all(sorted(p.params["allowed_updates"]) == sorted(used) for p in polls)


async def test_the_webhook_asks_for_the_updates_the_routers_use(
    telegram_server: FakeTelegramServer, make_deps: Deps
) -> None:
    settings = bot_settings(
        telegram_server,
        webhook_url="https://bot.example.com/telegram",
        webhook_secret="webhook-secret-4f9a1c",
        webhook_host="127.0.0.1",
        webhook_port=free_port(),
    )
    dp = build_dispatcher(make_deps(settings))
    bot = telegram_server.new_bot()
    serving = asyncio.create_task(serve_webhook(dp, bot, settings))
    try:
        call = await telegram_server.wait_for_call("setWebhook")
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        await bot.session.close()
    assert sorted(call.params["allowed_updates"]) == sorted(dp.resolve_used_update_types())
