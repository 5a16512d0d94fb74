"""Deleting Langfuse traces through its public API (the SDK's async API client): a person's
traces (by the user id each trace carries, app/tracing.py) and traces past the retention.

Traces are found through the observations API (GET /api/public/v2/observations, Langfuse's
real-time read path, filtered by userId or start time) and deleted in batches (DELETE
/api/public/traces with their ids); Langfuse removes a trace's observations and scores with it.
"""

import logging
from collections.abc import Sequence
from datetime import datetime

from langfuse.api import AsyncLangfuseAPI

from app.settings import LangfuseSettings

log = logging.getLogger(__name__)

# Observations per page (Langfuse's maximum) and trace ids per delete request.
_PAGE = 1000
_DELETE_BATCH = 100


class TraceAdmin:
    """Finds and deletes traces in one Langfuse project."""

    def __init__(self, api: AsyncLangfuseAPI) -> None:
        self.api = api

    @classmethod
    def from_settings(
        cls, settings: LangfuseSettings, timeout_s: float = 30.0
    ) -> "TraceAdmin | None":
        """On the configured project's keys; None when tracing is off."""
        if not settings.enabled or settings.secret_key is None or settings.public_key is None:
            return None
        api = AsyncLangfuseAPI(
            base_url=settings.base_url,
            username=settings.public_key,
            password=settings.secret_key.get_secret_value(),
            x_langfuse_public_key=settings.public_key,
            timeout=timeout_s,
        )
        return cls(api)

    async def trace_ids(
        self, *, user_id: str | None = None, before: datetime | None = None
    ) -> list[str]:
        """Ids of the traces with an observation of this user, or whose root started before
        `before` (both filters when both are given)."""
        found: dict[str, None] = {}
        cursor: str | None = None
        while True:
            page = await self.api.observations.get_many(
                fields="core",
                limit=_PAGE,
                cursor=cursor,
                user_id=user_id,
                to_start_time=before,
                # Past the retention a trace is judged by its start (its root observation).
                is_root_observation=True if before is not None else None,
            )
            for observation in page.data:
                if observation.trace_id:
                    found.setdefault(observation.trace_id)
            cursor = page.meta.cursor
            if not cursor or not page.data:
                return list(found)

    async def delete(self, trace_ids: Sequence[str]) -> int:
        """Delete these traces; returns how many were asked to go."""
        for start in range(0, len(trace_ids), _DELETE_BATCH):
            batch = list(trace_ids[start : start + _DELETE_BATCH])
            await self.api.trace.delete_multiple(trace_ids=batch)
        return len(trace_ids)

    async def forget_user(self, user_id: str) -> int:
        """Delete every trace of a user; returns how many."""
        return await self.delete(await self.trace_ids(user_id=user_id))

    async def expire(self, before: datetime) -> int:
        """Delete the traces that started before `before`; returns how many."""
        return await self.delete(await self.trace_ids(before=before))
