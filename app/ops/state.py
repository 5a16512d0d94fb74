"""The bot's state in memory (no REDIS_URL) with the same time limit as in Redis: a
conversation, and a message record (answer -> trace, with the question), is forgotten
BOT_STATE_TTL_S after it was last written, instead of living until the process ends."""

import time
from collections.abc import Callable, Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import StateType, StorageKey
from aiogram.fsm.storage.memory import MemoryStorage


class ExpiringMemoryStorage(MemoryStorage):
    """aiogram's MemoryStorage whose keys expire ttl_s after their last write (like
    RedisStorage's state_ttl and data_ttl); expired keys are swept as new ones are written."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.ttl_s = ttl_s
        self._clock = clock
        self._written: dict[StorageKey, float] = {}
        self._swept = clock()

    def _touch(self, key: StorageKey) -> None:
        now = self._clock()
        self._written[key] = now
        if now - self._swept >= min(self.ttl_s, 600.0):
            self._swept = now
            self.sweep()

    def _fresh(self, key: StorageKey) -> None:
        """Drop the key if it expired (a read then finds nothing)."""
        written = self._written.get(key)
        if written is not None and self._clock() - written >= self.ttl_s:
            self._forget(key)

    def _forget(self, key: StorageKey) -> None:
        self._written.pop(key, None)
        self.storage.pop(key, None)

    def sweep(self) -> int:
        """Drop every expired key; returns how many."""
        now = self._clock()
        expired = [k for k, at in self._written.items() if now - at >= self.ttl_s]
        for key in expired:
            self._forget(key)
        return len(expired)

    def forget_user(self, user_id: int) -> int:
        """Drop a user's conversations and the records of their private chat."""
        doomed = [k for k in list(self.storage) if user_id in (k.user_id, k.chat_id)]
        for key in doomed:
            self._forget(key)
        return len(doomed)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the state and restart the key's time."""
        await super().set_state(key, state.state if isinstance(state, State) else state)
        self._touch(key)

    async def get_state(self, key: StorageKey) -> str | None:
        """The state, unless expired."""
        self._fresh(key)
        if key not in self.storage:  # a read creates no record (the base class's would)
            return None
        return await super().get_state(key)

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Set the data and restart the key's time."""
        await super().set_data(key, data)
        self._touch(key)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        """The data, unless expired."""
        self._fresh(key)
        if key not in self.storage:
            return {}
        return await super().get_data(key)

    async def get_value(
        self, storage_key: StorageKey, dict_key: str, default: Any | None = None
    ) -> Any | None:
        """One value of the data, unless expired."""
        self._fresh(storage_key)
        if storage_key not in self.storage:
            return default
        return await super().get_value(storage_key, dict_key, default)
