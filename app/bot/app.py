"""The bot's composition root: clients built once, handed to the Dispatcher as keyword
arguments, routers included in order; long polling, or a webhook when a public URL is set."""

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlparse

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import BotCommand
from aiohttp import web

from app.bot.access import Access, load_collections
from app.bot.handlers import ask, errors, feedback, owners, start
from app.bot.handlers.ask import Answering
from app.bot.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from app.bot.settings import BotSettings
from app.chain.chain import Chain
from app.factory import Services, build_services
from app.settings import Settings
from app.tracing import Tracer
from ingestion.pipeline import Ingestor
from ingestion.settings import IngestionSettings
from kb.settings import load_settings
from kb.store import VectorStore

log = logging.getLogger(__name__)
COMMANDS = [
    BotCommand(command="start", description="what I can do"),
    BotCommand(command="collection", description="choose the knowledge base"),
    BotCommand(command="docs", description="documents of a knowledge base you own"),
    BotCommand(command="help", description="how to use me"),
]


@dataclass
class BotDeps:
    """What handlers receive by name."""

    chain: Chain
    access: Access
    ingestor: Ingestor
    tracer: Tracer
    store: VectorStore
    bot_settings: BotSettings
    # Shared by replicas (Redis) or per process (None: in memory).
    limiter: RateLimiter | None = None


def build_dispatcher(deps: BotDeps, storage: BaseStorage | None = None) -> Dispatcher:
    """A Dispatcher with every router (feedback comments before questions) and the error
    handler. Routers are built per Dispatcher, so tests and benchmarks can run several."""
    dp = Dispatcher(
        storage=storage or MemoryStorage(),
        answering=Answering(
            deps.chain,
            asyncio.Semaphore(deps.bot_settings.max_concurrent_chains),
            deps.bot_settings,
        ),
        access=deps.access,
        ingestor=deps.ingestor,
        tracer=deps.tracer,
        store=deps.store,
        bot_settings=deps.bot_settings,
        limiter=deps.limiter or MemoryRateLimiter(deps.bot_settings.rate_limit_per_minute),
    )
    dp.include_routers(start.router(), feedback.router(), owners.router(), ask.router())
    dp.errors.register(errors.on_error)
    return dp


def make_bot(settings: BotSettings) -> Bot:
    """The Bot client, pointed at TELEGRAM_API_URL when set (a self-hosted Bot API server)."""
    token = settings.require_token()
    if settings.telegram_api_url:
        api = TelegramAPIServer.from_base(settings.telegram_api_url)
        return Bot(token, session=AiohttpSession(api=api))
    return Bot(token)


def make_storage(settings: BotSettings) -> BaseStorage:
    """Redis (shared by replicas, with a TTL) when REDIS_URL is set, else memory."""
    if not settings.redis_url:
        return MemoryStorage()
    from aiogram.fsm.storage.redis import RedisStorage

    return RedisStorage.from_url(
        settings.redis_url, state_ttl=settings.state_ttl_s, data_ttl=settings.state_ttl_s
    )


def bot_deps(services: Services, settings: BotSettings) -> BotDeps:
    """The handlers' dependencies on top of the chain's services."""
    access = load_collections(settings.collections_file, settings.admins)
    searcher = services.searcher
    ingestor = Ingestor(
        services.store, searcher.dense, searcher.sparse, load_settings(IngestionSettings)
    )
    limiter: RateLimiter | None = None
    if settings.redis_url:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url)
        limiter = RedisRateLimiter(redis, settings.rate_limit_per_minute)
    return BotDeps(
        services.chain, access, ingestor, services.tracer, services.store, settings, limiter
    )


async def run_bot(settings: Settings, bot_settings: BotSettings) -> None:
    """Run until stopped: polling, or the webhook server when BOT_WEBHOOK_URL is set."""
    bot = make_bot(bot_settings)
    services = await build_services(settings)
    storage = make_storage(bot_settings)
    try:
        dp = build_dispatcher(bot_deps(services, bot_settings), storage)
        await bot.set_my_commands(COMMANDS)
        if bot_settings.webhook_url:
            await serve_webhook(dp, bot, bot_settings)
        else:
            await bot.delete_webhook(drop_pending_updates=False)
            log.info("polling for updates")
            await dp.start_polling(bot, handle_signals=True)
    finally:
        await storage.close()
        await bot.session.close()
        await services.aclose()


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve_webhook(dp: Dispatcher, bot: Bot, settings: BotSettings) -> None:
    """Serve Telegram's webhook calls (checked against the secret) until cancelled."""
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application

    assert settings.webhook_url is not None
    assert settings.webhook_secret is not None
    secret = settings.webhook_secret.get_secret_value()
    path = urlparse(settings.webhook_url).path or "/"
    app = web.Application()
    # For the orchestrator's health checks and the proxy in front of the replicas.
    app.router.add_get("/healthz", _healthz)
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, path=path)
    setup_application(app, dp, bot=bot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
    await site.start()
    # Every replica sets the same URL and secret; Telegram spreads updates over them.
    await bot.set_webhook(settings.webhook_url, secret_token=secret, drop_pending_updates=False)
    log.info(
        "webhook at %s, listening on %s:%s", path, settings.webhook_host, settings.webhook_port
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
