"""Per-user rate limit (a sliding minute, per process)."""

import time
from collections import defaultdict, deque


class RateLimiter:
    """At most `per_minute` questions per user in any 60 seconds."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._asked: dict[int, deque[float]] = defaultdict(deque)

    def wait_s(self, user_id: int, now: float | None = None) -> float:
        """0 when the user may ask now (and counts it); else the seconds until they may."""
        now = time.monotonic() if now is None else now
        asked = self._asked[user_id]
        while asked and now - asked[0] >= 60.0:
            asked.popleft()
        if len(asked) >= self.per_minute:
            return 60.0 - (now - asked[0])
        asked.append(now)
        return 0.0
