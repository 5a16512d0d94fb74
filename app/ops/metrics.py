"""Prometheus metrics of one bot process, recorded from few places: the chain's result hook
(outcomes, step latencies, LLM errors, cache hits), the LLM router's fallback hook, a wrapper
around the rate limiter, and the ingestor's report hook. Served at /metrics (app/ops/health.py).

Each Metrics object has its own registry (no process-wide global), so tests and several
dispatchers in one process do not count into each other.
"""

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.bot.limits import RateLimiter
from app.chain.types import ChainResult, ResultKind
from app.llm.base import LLMClient, WrappedLLM
from app.llm.router import FallbackClient
from ingestion.pipeline import IngestReport

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Chain steps as ChainResult.timings names them ("llm" and "total" are sums, kept too).
STEPS = ("paraphrase", "retrieve", "relevance", "clarify", "answer", "llm", "total")
# Seconds: retrieval takes milliseconds, an answer on a CPU model tens of seconds.
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class Metrics:
    """The counters and histograms, and the hooks that fill them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.questions = Counter(
            "kb_questions", "Questions answered, by outcome", ["outcome"], registry=r
        )
        self.step_seconds = Histogram(
            "kb_step_seconds", "Time per chain step", ["step"], buckets=_BUCKETS, registry=r
        )
        self.llm_errors = Counter(
            "kb_llm_errors",
            "LLM failures: a question that failed on the LLM (chain), or a primary server "
            "that failed before the fallback took the request (primary)",
            ["where"],
            registry=r,
        )
        self.llm_fallbacks = Counter(
            "kb_llm_fallbacks", "LLM requests served by the fallback server", registry=r
        )
        self.rate_limited = Counter(
            "kb_rate_limited", "Questions refused by the per-user rate limit", registry=r
        )
        self.cache_hits = Counter(
            "kb_cache_hits", "Questions answered from the answer cache", registry=r
        )
        self.ingested_files = Counter(
            "kb_ingested_files", "Files ingested in this process, by status", ["status"], registry=r
        )
        # Every label shows from the start (0), so a rate() over it never starts empty.
        for kind in ResultKind:
            self.questions.labels(kind.value)
        for where in ("chain", "primary"):
            self.llm_errors.labels(where)
        for status in ("added", "unchanged", "replaced", "failed"):
            self.ingested_files.labels(status)

    def render(self) -> bytes:
        """The text exposition format (what /metrics returns)."""
        return generate_latest(self.registry)

    def observe_result(self, result: ChainResult) -> None:
        """The chain's result hook: outcome, step times, an LLM failure, a cache hit."""
        self.questions.labels(result.kind.value).inc()
        for step, ms in result.timings.items():
            if step in STEPS:
                self.step_seconds.labels(step).observe(ms / 1000)
        if result.kind is ResultKind.ERROR and (result.error or "").startswith("LLM"):
            self.llm_errors.labels("chain").inc()
        # Set by the answer cache (app/cache) on a result it served; absent without it.
        if getattr(result, "cached", False):
            self.cache_hits.inc()

    def observe_llm(self, event: str) -> None:
        """The LLM router's hook: "primary_failed" or "fallback"."""
        if event == "fallback":
            self.llm_fallbacks.inc()
        elif event == "primary_failed":
            self.llm_errors.labels("primary").inc()

    def watch_llm(self, clients: Mapping[str, LLMClient]) -> None:
        """Hook every fallback-wrapped client of the chain (none without a fallback)."""
        for client in clients.values():
            inner = client
            # Through wrappers (the masking one of PII_MASK=traces+llm) to the router's client.
            while isinstance(inner, WrappedLLM):
                inner = inner._inner
            if isinstance(inner, FallbackClient):
                inner.on_event = self.observe_llm

    def observe_ingestion(self, report: IngestReport) -> None:
        """The ingestor's report hook: files by status (failures are the alert)."""
        for file in report.files:
            self.ingested_files.labels(file.status).inc()


class CountingLimiter:
    """A rate limiter that counts the questions it refuses."""

    def __init__(self, inner: RateLimiter, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def wait_s(self, user_id: int) -> float:
        """The inner limiter's answer; a refusal is counted."""
        wait = await self.inner.wait_s(user_id)
        if wait > 0:
            self.metrics.rate_limited.inc()
        return wait
