"""One lock per conversation, held around each read-modify-write of its state: aiogram handles
updates concurrently and replicas share Redis, so without it two updates of one conversation
overwrite each other's changes. In memory for one process; in Redis for replicas, with a lease
renewed while it is held (a replica that dies frees the lock when the lease runs out) and a
bounded wait, so a stuck conversation answers with the polite error instead of hanging."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.exceptions import WatchError

from app.errors import AppError

log = logging.getLogger(__name__)


class ConversationBusyError(AppError):
    """The conversation's lock was not free within the configured wait."""


class ConversationLocks(Protocol):
    """Mutual exclusion per conversation key."""

    def hold(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the lock of key for the block; ConversationBusyError if it stays taken."""
        ...


class MemoryLocks:
    """asyncio locks within one process; a lock is dropped when nobody holds or awaits it."""

    def __init__(self, wait_s: float = 10.0) -> None:
        self.wait_s = wait_s
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of key for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await lock.acquire()
            except TimeoutError:
                raise ConversationBusyError(f"conversation {key} is busy") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class RedisLocks:
    """Locks shared by replicas: SET NX with a lease, renewed while held; renew and release
    only while the token is still ours (WATCH/MULTI, so no server-side scripts are needed)."""

    def __init__(
        self,
        redis: Any,
        *,
        lease_s: float = 30.0,
        wait_s: float = 10.0,
        call_timeout_s: float = 5.0,
        prefix: str = "kb:lock:",
    ) -> None:
        self.redis = redis
        self.lease_s = lease_s
        self.wait_s = wait_s
        # A guard over each call, on top of the client's own socket timeouts.
        self.call_timeout_s = call_timeout_s
        self.prefix = prefix

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of key for the block, renewing its lease meanwhile."""
        name, token = f"{self.prefix}{key}", uuid.uuid4().hex
        await self._acquire(name, token)
        renewer = asyncio.create_task(self._renew(name, token), name=f"lock-renew-{key}")
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not await self._if_ours(name, token, release=True):
                log.warning("lock %s expired before it was released", name)

    async def _acquire(self, name: str, token: str) -> None:
        lease_ms = int(self.lease_s * 1000)
        pause = 0.02
        try:
            async with asyncio.timeout(self.wait_s):
                while True:
                    async with asyncio.timeout(self.call_timeout_s):
                        if await self.redis.set(name, token, nx=True, px=lease_ms):
                            return
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.2)
        except TimeoutError:
            raise ConversationBusyError(f"lock {name} not acquired in {self.wait_s} s") from None

    async def _renew(self, name: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not await self._if_ours(name, token, release=False):
                log.warning("lock %s was lost while held", name)
                return

    async def _if_ours(self, name: str, token: str, *, release: bool) -> bool:
        """Extend the lease (or delete the lock) if it still holds our token."""
        async with asyncio.timeout(self.call_timeout_s):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(name)
                    current = await pipe.get(name)
                    if current is None or _text(current) != token:
                        await pipe.unwatch()
                        return False
                    pipe.multi()
                    if release:
                        pipe.delete(name)
                    else:
                        pipe.pexpire(name, int(self.lease_s * 1000))
                    await pipe.execute()
                except WatchError:
                    return False
        return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
