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
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.fsm.strategy import FSMStrategy
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app import logsafe
from app.bot.access import Access, load_collections
from app.bot.handlers import ask, errors, feedback, gaps, loop, owners, sources, start
from app.bot.handlers.loop import LoopAnswering
from app.bot.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from app.bot.locks import ConversationLocks, MemoryLocks, RedisLocks
from app.bot.settings import BotSettings
from app.bot.startup import freeze_heap, poll, set_up_bot, wait_for_llm, when_reachable
from app.chain.chain import Chain
from app.factory import Services, build_services
from app.loop.cards import CardStore
from app.loop.digest import Digest
from app.loop.escalation import Escalations
from app.loop.records import LoopRecords
from app.loop.reminders import Reminders
from app.loop.review import Reviews
from app.ops.health import Health
from app.ops.runtime import Ops, start_ops
from app.ops.settings import OpsSettings
from app.ops.state import ExpiringMemoryStorage
from app.settings import Settings
from app.tracing import Tracer
from ingestion.originals import Originals
from ingestion.pipeline import Ingestor
from ingestion.settings import IngestionSettings, OriginalsSettings
from kb.settings import load_settings
from kb.store import VectorStore

log = logging.getLogger(__name__)


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
    # The one Redis client (make_redis) when REDIS_URL is set, for whatever replicas share.
    redis: Redis | None = None
    # Per-conversation locks (None: in Redis when redis is set, else in memory).
    locks: ConversationLocks | None = None
    # The knowledge loop's records (None: unanswered questions are not recorded).
    loop: LoopRecords | None = None


def _locks(deps: BotDeps) -> ConversationLocks:
    if deps.locks is not None:
        return deps.locks
    return RedisLocks(deps.redis) if deps.redis is not None else MemoryLocks()


def loop_flows(deps: BotDeps) -> tuple[Escalations | None, Reviews | None]:
    """Escalations and the review queue, on cards kept in the loop's store collection (both
    off without the knowledge loop's records)."""
    if deps.loop is None:
        return None, None
    # Card locks in Redis with replicas, so a card is answered and reminded once.
    cards = CardStore(deps.loop, _locks(deps))
    escalations = Escalations(cards, deps.access, deps.bot_settings, deps.tracer, deps.ingestor)
    reviews = Reviews(cards, escalations, deps.bot_settings, deps.tracer)
    return escalations, reviews


def build_dispatcher(deps: BotDeps, storage: BaseStorage | None = None) -> Dispatcher:
    """A Dispatcher with every router (feedback comments before questions) and the error
    handler. Routers are built per Dispatcher, so tests and benchmarks can run several."""
    escalations, reviews = loop_flows(deps)
    dp = Dispatcher(
        storage=storage or MemoryStorage(),
        # A conversation per user and forum topic (the storage keys carry the topic).
        fsm_strategy=FSMStrategy.USER_IN_TOPIC,
        locks=_locks(deps),
        # Answering, plus the knowledge loop's note of each result (app/loop/escalation.py).
        answering=LoopAnswering(
            deps.chain,
            asyncio.Semaphore(deps.bot_settings.max_concurrent_chains),
            deps.bot_settings,
            escalations=escalations,
        ),
        access=deps.access,
        ingestor=deps.ingestor,
        tracer=deps.tracer,
        store=deps.store,
        bot_settings=deps.bot_settings,
        limiter=deps.limiter or MemoryRateLimiter(deps.bot_settings.rate_limit_per_minute),
        loop=deps.loop,
        escalations=escalations,
        reviews=reviews,
        # The answer cache (a 👎 evicts its entry), None when CACHE_MODE=off.
        cache=deps.chain.cache,
    )
    if escalations is not None:
        reminders = Reminders(escalations.cards, deps.access, deps.bot_settings.escalation_remind_s)
        dp.startup.register(reminders.start)
        dp.shutdown.register(reminders.stop)
    if deps.loop is not None:
        digest = Digest(
            deps.loop,
            deps.access,
            _locks(deps),
            dp.storage,
            weekday=deps.bot_settings.digest_weekday,
            hour=deps.bot_settings.digest_hour,
        )
        dp["digest"] = digest
        dp.startup.register(digest.start)
        dp.shutdown.register(digest.stop)
    dp.include_routers(
        start.router(),
        feedback.router(),
        gaps.router(),
        owners.router(),
        sources.router(),
        loop.router(),
        ask.router(),
    )
    dp.errors.register(errors.on_error)
    # Registered last: runs after the other start-up handlers have built what they keep.
    dp.startup.register(freeze_heap)
    return dp


def make_bot(settings: BotSettings) -> Bot:
    """The Bot client, pointed at TELEGRAM_API_URL when set (a self-hosted Bot API server)."""
    token = settings.require_token()
    if settings.telegram_api_url:
        api = TelegramAPIServer.from_base(settings.telegram_api_url)
        return Bot(token, session=AiohttpSession(api=api))
    return Bot(token)


def make_redis(settings: BotSettings) -> Redis | None:
    """The Redis client (None without REDIS_URL): every connect and command bounded by
    BOT_REDIS_TIMEOUT_S and retried once, so a Redis that hangs fails a request in seconds
    (the error handler then apologises) instead of silencing the bot."""
    if not settings.redis_url:
        return None
    password = settings.redis_password
    return Redis.from_url(
        settings.redis_url,
        # A password inside REDIS_URL wins over this one (redis-py's rule).
        password=password.get_secret_value() if password is not None else None,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 1),
    )


def make_storage(settings: BotSettings, redis: Redis | None = None) -> BaseStorage:
    """Redis (shared by replicas, with a TTL) when REDIS_URL is set, else memory; closing it
    closes the Redis client."""
    if redis is None:
        redis = make_redis(settings)
    if redis is None:
        # Forgotten after the same time as in Redis, not kept until the process ends.
        return ExpiringMemoryStorage(settings.state_ttl_s)
    return RedisStorage(redis, state_ttl=settings.state_ttl_s, data_ttl=settings.state_ttl_s)


def bot_deps(services: Services, settings: BotSettings, redis: Redis | None = None) -> BotDeps:
    """The handlers' dependencies on top of the chain's services."""
    access = load_collections(
        settings.collections_file,
        settings.admins,
        reload_s=settings.collections_reload_s,
        membership_ttl_s=settings.membership_ttl_s,
    )
    searcher = services.searcher
    ingestor = Ingestor(
        services.store, searcher.dense, searcher.sparse, load_settings(IngestionSettings)
    )
    # Uploads are kept (ORIGINALS_DIR) and deleted with their document.
    ingestor.originals = Originals.from_settings(load_settings(OriginalsSettings))
    limiter: RateLimiter | None = None
    if redis is not None:
        limiter = RedisRateLimiter(redis, settings.rate_limit_per_minute)
    return BotDeps(
        services.chain,
        access,
        ingestor,
        services.tracer,
        services.store,
        settings,
        limiter,
        redis,
        loop=services.loop,
    )


async def run_bot(settings: Settings, bot_settings: BotSettings) -> None:
    """Run until stopped: polling, or the webhook server when BOT_WEBHOOK_URL is set."""
    # Before anything can log: the token, keys and passwords never reach a log line.
    logsafe.install(logsafe.secrets_of(settings, bot_settings))
    bot = make_bot(bot_settings)
    services = await build_services(settings)
    if services.masker is not None:
        # PII_MASK: questions quoted in log lines are masked too.
        from app.pii import logs as pii_logs

        pii_logs.install(services.masker)
    redis = make_redis(bot_settings)
    storage = make_storage(bot_settings, redis)
    ops: Ops | None = None
    try:
        deps = bot_deps(services, bot_settings, redis)
        deps.access.reload_on_sighup()
        # Metrics, the question log, health on HEALTH_PORT and retention (app/ops).
        ops = await start_ops(services, deps, bot_settings, load_settings(OpsSettings))
        # vLLM may still be loading its model (after a restart of either): wait for it.
        await wait_for_llm(settings.llm, bot_settings)
        dp = build_dispatcher(deps, storage)
        if bot_settings.webhook_url:
            await set_up_bot(bot, bot_settings)
            await serve_webhook(dp, bot, bot_settings, ops.health)
        else:
            await poll(dp, bot, bot_settings)
    finally:
        if ops is not None:
            await ops.stop()
        await storage.close()
        await bot.session.close()
        await services.aclose()


async def serve_webhook(
    dp: Dispatcher, bot: Bot, settings: BotSettings, health: Health | None = None
) -> None:
    """Serve Telegram's webhook calls (checked against the secret) until cancelled, with
    /healthz, /readyz and /metrics (app/ops/health.py) beside them."""
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application

    assert settings.webhook_url is not None
    assert settings.webhook_secret is not None
    secret = settings.webhook_secret.get_secret_value()
    path_url = settings.webhook_url
    path = urlparse(path_url).path or "/"
    app = web.Application()
    # For the orchestrator's health checks and the proxy in front of the replicas.
    (health or Health({})).add_routes(app)
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, path=path)
    setup_application(app, dp, bot=bot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
    await site.start()
    # Every replica sets the same URL and secret; Telegram spreads updates over them.
    allowed = dp.resolve_used_update_types()
    await when_reachable(
        "setWebhook",
        lambda: bot.set_webhook(
            path_url, secret_token=secret, drop_pending_updates=False, allowed_updates=allowed
        ),
        settings,
    )
    log.info(
        "webhook at %s, listening on %s:%s", path, settings.webhook_host, settings.webhook_port
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
