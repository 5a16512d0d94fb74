"""Operations wired into a running bot: metrics hooks, the per-question log line, the health
server and the periodic retention; one start and one stop for the composition root."""

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from app.bot.limits import MemoryRateLimiter
from app.bot.settings import BotSettings
from app.ops.health import Health, checks_for
from app.ops.metrics import CountingLimiter, Metrics
from app.ops.questions import QuestionLog
from app.ops.retention import Retention
from app.ops.settings import OpsSettings
from app.ops.traces import TraceAdmin

if TYPE_CHECKING:
    from app.bot.app import BotDeps
    from app.factory import Services

log = logging.getLogger(__name__)


@dataclass
class Ops:
    """What start_ops set going (stop() ends it)."""

    metrics: Metrics
    health: Health
    retention: Retention
    runner: web.AppRunner | None = None

    async def stop(self) -> None:
        """Stop the retention runs and the health server."""
        await self.retention.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def start_ops(
    services: "Services", deps: "BotDeps", bot_settings: BotSettings, settings: OpsSettings
) -> Ops:
    """Hook metrics and the question log into the chain, the LLM router, the rate limiter and
    the ingestor; serve health on HEALTH_PORT (unless the webhook's server already has that
    port); start the retention. Call before the Dispatcher is built (it takes the limiter)."""
    metrics = Metrics()
    services.chain.result_hooks += [metrics.observe_result, QuestionLog(settings.log_questions)]
    metrics.watch_llm(services.llm)
    limiter = deps.limiter or MemoryRateLimiter(bot_settings.rate_limit_per_minute)
    deps.limiter = CountingLimiter(limiter, metrics)
    deps.ingestor.on_report = metrics.observe_ingestion
    checks = checks_for(services.store, services.llm, services.settings.llm, deps.redis)
    health = Health(checks, metrics)
    retention = Retention(
        services.loop,
        TraceAdmin.from_settings(services.settings.langfuse),
        settings.trace_retention_days,
        cache=services.chain.cache,
    )
    ops = Ops(metrics, health, retention)
    shared = bot_settings.webhook_url and settings.health_port == bot_settings.webhook_port
    if settings.health_port and not shared:
        ops.runner = await health.serve(settings.health_host, settings.health_port)
    retention.start(settings.retention_interval_h)
    return ops
