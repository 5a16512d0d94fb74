"""Who is in a Telegram group right now: getChatMember, cached per (group, user) for a bounded
time, so adding someone to the team chat grants access and removing them revokes it within
that time. An error from Telegram never grants access."""

import logging
import time

from aiogram import Bot
from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ChatMemberRestricted

log = logging.getLogger(__name__)

_MEMBERS = frozenset(
    {ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
)


class Membership:
    """getChatMember answers, cached: ttl_s for an answer, error_ttl_s (shorter) after an error,
    so a group the bot cannot see is not asked on every message."""

    def __init__(self, ttl_s: float = 300.0, error_ttl_s: float = 30.0, max_entries: int = 10_000):
        self.ttl_s = ttl_s
        self.error_ttl_s = min(error_ttl_s, ttl_s)
        self.max_entries = max_entries
        self._cache: dict[tuple[int, int], tuple[float, bool]] = {}
        # Groups whose last check failed: logged once until a check succeeds again.
        self._failing: set[int] = set()

    async def any_of(self, bot: Bot, groups: frozenset[int], user_id: int) -> bool:
        """Whether the user is a member of at least one of the groups (in id order)."""
        for group in sorted(groups):
            if await self.is_member(bot, group, user_id):
                return True
        return False

    async def is_member(self, bot: Bot, group_id: int, user_id: int) -> bool:
        """Member, administrator, creator, or restricted but still in the group; left and
        kicked users are not."""
        key = (group_id, user_id)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            member = await bot.get_chat_member(group_id, user_id)
        except TelegramAPIError as exc:
            if group_id not in self._failing:
                self._failing.add(group_id)
                log.warning(
                    "membership of group %s cannot be checked (access not granted): %s",
                    group_id,
                    exc,
                )
            self._remember(key, now + self.error_ttl_s, False)
            return False
        self._failing.discard(group_id)
        found = member.status in _MEMBERS or (
            isinstance(member, ChatMemberRestricted) and member.is_member
        )
        self._remember(key, now + self.ttl_s, found)
        return found

    def _remember(self, key: tuple[int, int], expires: float, value: bool) -> None:
        if len(self._cache) >= self.max_entries:
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            # Still full: the oldest entries go (dicts keep insertion order).
            for old in list(self._cache)[: max(0, len(self._cache) - self.max_entries + 1)]:
                del self._cache[old]
        self._cache[key] = (expires, value)
