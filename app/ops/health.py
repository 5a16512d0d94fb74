"""Health over HTTP, the same routes in both modes: /healthz (the process serves), /readyz
(the store, the LLM and Redis answer; 503 otherwise) and /metrics (Prometheus). In webhook mode
they are added to the webhook's server; in both modes they are served on HEALTH_PORT, which
compose's healthcheck asks.

A check is an async callable that raises when its part is down; the answer names the part and
the error's type only (an error's text can carry a URL with a password).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from app.llm.base import LLMClient, WrappedLLM
from app.ops.metrics import CONTENT_TYPE, Metrics
from app.settings import STEPS, LLMSettings
from app.smoke import UnavailableLLM
from kb.store import VectorStore

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


class Health:
    """Readiness checks and metrics behind three routes."""

    def __init__(
        self, checks: Mapping[str, Check], metrics: Metrics | None = None, timeout_s: float = 3.0
    ) -> None:
        self.checks = dict(checks)
        self.metrics = metrics
        self.timeout_s = timeout_s

    async def readiness(self) -> dict[str, str]:
        """Each part: "ok", or "failed: <error type>" (all checked at once, each bounded)."""
        names = list(self.checks)
        outcomes = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        return dict(zip(names, outcomes, strict=True))

    async def _run(self, check: Check) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                await check()
        except TimeoutError:
            return "failed: timeout"
        except Exception as exc:  # any failure is the answer; its type says enough
            return f"failed: {type(exc).__name__}"
        return "ok"

    def add_routes(self, app: web.Application) -> None:
        """/healthz, /readyz and /metrics on an aiohttp application."""
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)

    async def serve(self, host: str, port: int) -> web.AppRunner:
        """A server of its own (polling mode, or a port apart from the webhook's); the caller
        cleans the runner up."""
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("health and metrics on %s:%s", host, port)
        return runner

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = await self.readiness()
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            log.warning("not ready: %s", checks)
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return web.Response(status=404, text="metrics are off")
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def store_check(store: VectorStore) -> Check:
    """The vector store lists its collections."""

    async def check() -> None:
        await store.list_collections()

    return check


def redis_check(redis: Any) -> Check:
    """Redis answers PING."""

    async def check() -> None:
        await redis.ping()

    return check


def llm_check(clients: Mapping[str, LLMClient], settings: LLMSettings) -> Check:
    """Every step has a model that can answer: the embedded one loaded (not replaced by the
    stand-in for a model that cannot run here), or its server's /models (or the fallback's)
    answering 200."""

    async def check() -> None:
        for step, client in clients.items():
            inner = client
            while isinstance(inner, WrappedLLM):
                inner = inner._inner
            if isinstance(inner, UnavailableLLM):
                raise LLMDownError(f"{step}: the embedded model cannot run")
        servers = _servers(settings)
        if not servers:
            return
        timeout = aiohttp.ClientTimeout(total=settings.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as http:
            up = {
                url: await _answers(http, url, key)
                for url, key in {u: k for urls in servers.values() for u, k in urls}.items()
            }
        for step, urls in servers.items():
            if not any(up[url] for url, _ in urls):
                raise LLMDownError(f"{step}: no LLM server answers")

    return check


class LLMDownError(Exception):
    """No model can answer a step."""


def _servers(settings: LLMSettings) -> dict[str, list[tuple[str, str]]]:
    """Per step on a server: its (base URL, key) and the fallback's."""
    fallback = []
    if settings.fallback_base_url:
        key = settings.fallback_api_key
        fallback = [(settings.fallback_base_url, key.get_secret_value() if key else "")]
    servers: dict[str, list[tuple[str, str]]] = {}
    for step in STEPS:
        url = getattr(settings, f"{step}_base_url") or settings.base_url
        if url is None:
            continue
        key = getattr(settings, f"{step}_api_key") or settings.api_key
        servers[step] = [(url, key.get_secret_value() if key else ""), *fallback]
    return servers


async def _answers(http: aiohttp.ClientSession, base_url: str, key: str) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with http.get(base_url.rstrip("/") + "/models", headers=headers) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def checks_for(
    store: VectorStore,
    clients: Mapping[str, LLMClient],
    settings: LLMSettings,
    redis: Any | None,
) -> dict[str, Check]:
    """The bot's readiness checks (Redis only when it is configured)."""
    checks = {"store": store_check(store), "llm": llm_check(clients, settings)}
    if redis is not None:
        checks["redis"] = redis_check(redis)
    return checks
