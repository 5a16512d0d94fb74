"""Per-user rate limit over a sliding minute: in memory for one process, in Redis when the bot
runs as several replicas (each would otherwise allow the full rate)."""

import time
import uuid
from collections import defaultdict, deque
from typing import Any, Protocol


class RateLimiter(Protocol):
    """At most `per_minute` questions per user in any 60 seconds."""

    async def wait_s(self, user_id: int) -> float:
        """0 when the user may ask now (and counts it); else the seconds until they may."""
        ...


class MemoryRateLimiter:
    """The limit within one process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._asked: dict[int, deque[float]] = defaultdict(deque)

    async def wait_s(self, user_id: int) -> float:
        """0 when the user may ask now (and counts it); else the seconds until they may."""
        return self.check(user_id, time.monotonic())

    def check(self, user_id: int, now: float) -> float:
        """wait_s at a given time (for tests)."""
        asked = self._asked[user_id]
        while asked and now - asked[0] >= 60.0:
            asked.popleft()
        if len(asked) >= self.per_minute:
            return 60.0 - (now - asked[0])
        asked.append(now)
        return 0.0


class RedisRateLimiter:
    """The limit shared by every replica: one sorted set of question times per user."""

    def __init__(self, redis: Any, per_minute: int, prefix: str = "kb:rate:") -> None:
        self.redis = redis
        self.per_minute = per_minute
        self.prefix = prefix

    async def wait_s(self, user_id: int) -> float:
        """0 when the user may ask now (and counts it); else the seconds until they may."""
        key, now = f"{self.prefix}{user_id}", time.time()
        member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
        # One transaction: drop old entries, count this question, read the count and the oldest.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, now - 60.0)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.expire(key, 61)
            _, _, count, oldest, _ = await pipe.execute()
        if count <= self.per_minute:
            return 0.0
        await self.redis.zrem(key, member)
        return max(0.0, 60.0 - (now - float(oldest[0][1])))
