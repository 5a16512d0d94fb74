"""Retention: what the project deletes by age, per store that has no retention of its own.

- Langfuse traces older than TRACE_RETENTION_DAYS (through its public API, app/ops/traces.py);
- the knowledge loop's records and cards older than LOOP_RETENTION_DAYS (app/loop/records.py);
- the answer cache's expired entries (its own `expire`, when the cache is on).

Redis keeps the bot's state with a TTL (BOT_STATE_TTL_S) and needs nothing here.

It runs in the bot every RETENTION_INTERVAL_H hours: the bot is the one process that always
runs, and on the embedded store the only one that may open it while it runs. `python -m app
retention` runs it once (cron, or a setup without the bot; on the embedded store, with the bot
stopped). Every deletion is idempotent, so replicas running it at once do no harm.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from app.loop.records import LoopRecords
from app.ops.traces import TraceAdmin

log = logging.getLogger(__name__)


class Expires(Protocol):
    """A store that deletes its own expired entries (the answer cache)."""

    async def expire(self) -> int:
        """Delete what is past its time; returns how many."""
        ...


@dataclass
class Retention:
    """The stores to clean and how long traces are kept (days; 0: Langfuse keeps them)."""

    loop: LoopRecords | None
    traces: TraceAdmin | None
    trace_days: float
    cache: Expires | None = None
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def run(self, now: datetime | None = None) -> tuple[dict[str, int], dict[str, str]]:
        """One pass: (removed per store, failed stores with the error's type). A failing store
        does not stop the others."""
        now = now or datetime.now(UTC)
        removed: dict[str, int] = {}
        failed: dict[str, str] = {}
        jobs = {
            "traces": self._traces(now) if self.traces and self.trace_days > 0 else None,
            "loop_records": self.loop.purge(now) if self.loop is not None else None,
            "cached_answers": self.cache.expire() if self.cache is not None else None,
        }
        for name, job in jobs.items():
            if job is None:
                continue
            try:
                removed[name] = await job
            except Exception as exc:  # reported; the next pass tries again
                log.error("retention: %s failed: %s", name, type(exc).__name__)
                failed[name] = type(exc).__name__
        if any(removed.values()):
            log.info("retention removed %s", removed)
        return removed, failed

    async def _traces(self, now: datetime) -> int:
        assert self.traces is not None
        return await self.traces.expire(now - timedelta(days=self.trace_days))

    def start(self, interval_h: float) -> None:
        """Run now and then every interval_h hours, in the background (0: never)."""
        if interval_h > 0 and self._task is None:
            self._task = asyncio.create_task(self._every(interval_h * 3600), name="retention")

    async def stop(self) -> None:
        """Stop the background runs."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _every(self, seconds: float) -> None:
        while True:
            await self.run()
            await asyncio.sleep(seconds)
