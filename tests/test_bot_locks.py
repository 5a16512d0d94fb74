"""Per-conversation locks: in memory, and in Redis (fakeredis) as replicas share them."""

import asyncio
from typing import Any

import fakeredis
import pytest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.redis import RedisStorage

from app.bot import conversation
from app.bot.locks import ConversationBusyError, ConversationLocks, MemoryLocks, RedisLocks

KEY = StorageKey(bot_id=1, chat_id=-100, user_id=7, thread_id=3)


class SlowRedisStorage(RedisStorage):
    """A round trip per call, as a Redis over the network has: concurrent updates interleave
    between reading and writing a conversation."""

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        await asyncio.sleep(0.005)
        return await super().get_data(key)

    async def set_data(self, key: StorageKey, data: Any) -> None:
        await asyncio.sleep(0.005)
        await super().set_data(key, data)


async def _add_turns(locks: list[ConversationLocks], storage: RedisStorage, n: int) -> None:
    async def one(i: int) -> None:
        state = FSMContext(storage, KEY)
        async with conversation.editing(state, locks[i % len(locks)]) as talk:
            talk.remember(f"question {i}", f"answer {i}", keep_turns=100)

    await asyncio.gather(*(one(i) for i in range(n)))


async def test_replicas_keep_every_change_of_one_conversation() -> None:
    redis = fakeredis.FakeAsyncRedis()
    storage = SlowRedisStorage(redis)
    # Two replicas: two lock clients on one Redis.
    await _add_turns([RedisLocks(redis), RedisLocks(redis)], storage, 12)
    talk = await conversation.load(FSMContext(storage, KEY))
    assert len(talk.history) == 24
    assert not await redis.keys("kb:lock:*"), "every lock released"


async def test_without_a_lock_changes_are_lost() -> None:
    """The test above means something: the same updates without the lock lose turns."""

    class NoLocks:
        def hold(self, key: str) -> Any:
            return _nothing()

    redis = fakeredis.FakeAsyncRedis()
    storage = SlowRedisStorage(redis)
    await _add_turns([NoLocks()], storage, 12)
    talk = await conversation.load(FSMContext(storage, KEY))
    assert len(talk.history) < 24


async def test_memory_locks_serialise_and_forget_idle_keys() -> None:
    locks = MemoryLocks()
    storage = SlowRedisStorage(fakeredis.FakeAsyncRedis())
    await _add_turns([locks], storage, 10)
    assert len((await conversation.load(FSMContext(storage, KEY))).history) == 20
    assert len(locks) == 0


async def test_the_lease_is_renewed_while_held() -> None:
    redis = fakeredis.FakeAsyncRedis()
    holder = RedisLocks(redis, lease_s=0.3)
    other = RedisLocks(redis, lease_s=0.3, wait_s=0.2)
    async with holder.hold("c"):
        await asyncio.sleep(1.0)  # over three leases: renewed, not expired
        with pytest.raises(ConversationBusyError):
            async with other.hold("c"):
                pass
    async with other.hold("c"):
        pass


async def test_a_dead_replicas_lock_frees_after_its_lease() -> None:
    redis = fakeredis.FakeAsyncRedis()
    await redis.set("kb:lock:c", "someone-else", px=300)
    async with RedisLocks(redis, wait_s=2.0).hold("c"):
        assert (await redis.get("kb:lock:c")) != b"someone-else"


async def test_a_hanging_redis_gives_up_within_the_wait() -> None:
    class Hanging:
        async def set(self, *args: Any, **kwargs: Any) -> bool:
            await asyncio.sleep(3600)
            return True

    locks = RedisLocks(Hanging(), wait_s=0.3, call_timeout_s=0.1)
    async with asyncio.timeout(2):
        with pytest.raises(ConversationBusyError):
            async with locks.hold("c"):
                pass


async def test_memory_lock_wait_is_bounded() -> None:
    locks = MemoryLocks(wait_s=0.1)
    async with locks.hold("c"):
        with pytest.raises(ConversationBusyError):
            async with locks.hold("c"):
                pass
    assert len(locks) == 0


class _nothing:  # noqa: N801 - a context manager used like a function
    async def __aenter__(self) -> None:
        await asyncio.sleep(0)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
