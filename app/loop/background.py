"""A task of the knowledge loop that runs beside the bot: started with the Dispatcher, stopped
with it (reminders, the weekly digest)."""

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class BackgroundTask:
    """Holds one running task; start() in subclasses decides whether and what to run."""

    _task: asyncio.Task[None] | None = None

    def _begin(self, work: Coroutine[Any, Any, None], name: str) -> None:
        if self._task is None:
            self._task = asyncio.create_task(work, name=name)
        else:
            work.close()

    async def stop(self) -> None:
        """Stop the task (Dispatcher shut-down)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
