"""The bot's pure parts: access rules from the collections file, message splitting, the rate
limit, settings that refuse placeholder secrets."""

import html
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.bot.access import CollectionConfig, load_collections
from app.bot.limits import MemoryRateLimiter, RedisRateLimiter
from app.bot.render import answer_messages, split_text
from app.bot.settings import BotSettings
from app.chain.types import ChainResult, ResultKind, SourceRef
from kb.errors import ConfigurationError
from tests.conftest import without_env

COLLECTIONS = """
collections:
  - name: handbook
    title: Employee handbook
    readers: everyone
    owners: [111]
  - name: finance
    title: Finance
    readers: {users: [222], groups: [-100]}
    owners: [333]
  - name: secret
    readers: nobody
groups:
  -100: finance
"""


@pytest.fixture
def access_file(tmp_path: Path) -> Path:
    """The example collections file."""
    path = tmp_path / "collections.yaml"
    path.write_text(COLLECTIONS)
    return path


def names(configs: Sequence[CollectionConfig]) -> list[str]:
    """The names of collection configs."""
    return [c.name for c in configs]


async def test_private_chats_read_by_user(access_file: Path) -> None:
    access = load_collections(access_file, admins=[999])
    assert names(await access.readable(5, 5, "private")) == ["handbook"]
    assert names(await access.readable(222, 222, "private")) == ["handbook", "finance"]
    # Owners read what they own; admins read everything.
    assert names(await access.readable(333, 333, "private")) == ["handbook", "finance"]
    assert names(await access.readable(999, 999, "private")) == ["handbook", "finance", "secret"]


async def test_groups_read_by_group_not_by_asker(access_file: Path) -> None:
    access = load_collections(access_file, admins=[999])
    # A reader of finance asking in a group that may not read it gets only what the group may.
    assert names(await access.readable(222, -5, "group")) == ["handbook"]
    assert names(await access.readable(999, -5, "group")) == ["handbook"]
    assert names(await access.readable(5, -100, "group")) == ["handbook", "finance"]
    assert access.bound_collection(-100) == "finance"


def test_owners_and_admins(access_file: Path) -> None:
    access = load_collections(access_file, admins=[999])
    assert names(access.owned(111)) == ["handbook"]
    assert names(access.owned(999)) == ["handbook", "finance", "secret"]
    assert names(access.owned(222)) == []
    assert not access.owns(111, "finance")


async def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "collections.toml"
    path.write_text(
        '[[collections]]\nname = "wiki"\nlanguage = "ru"\nreaders = "everyone"\n'
        '[[collections]]\nname = "hr"\nreaders = { users = [1] }\n'
    )
    access = load_collections(path, admins=[])
    assert names(await access.readable(1, 1, "private")) == ["wiki", "hr"]
    assert access.collections["wiki"].language == "ru"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("collections:\n  - name: 'bad name'\n", "invalid collection name"),
        ("collections:\n  - name: a\n    language: fr\n", "language must be one of"),
        ("collections:\n  - name: a\n    readers: {people: [1]}\n", "people"),
        ("collections:\n  - name: a\ngroups:\n  -1: b\n", "unknown 'b'"),
        ("collections:\n  - name: a\n  - name: a\n", "appears twice"),
        ("collections: [", "COLLECTIONS_FILE"),
    ],
)
def test_bad_collections_file_names_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        load_collections(path, admins=[])


def test_missing_collections_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="COLLECTIONS_FILE"):
        load_collections(tmp_path / "nope.yaml", admins=[])


def test_long_answers_split_without_breaking_html() -> None:
    text = ("Use <b>tags</b> & entities carefully. " * 400).strip()
    pieces = split_text(text, limit=1000)
    assert len(pieces) > 5
    assert all(len(p) <= 1000 for p in pieces)
    assert html.unescape(" ".join(pieces)) == text
    assert all("&amp" not in p[-5:] or p.endswith("&amp;") for p in pieces)


def test_sources_block_links_urls_and_fits() -> None:
    sources = [
        SourceRef(1, "VPN <setup>", "it/vpn.md", "c", "/docs/it/vpn.md", None),
        SourceRef(2, "Wiki", "wiki.html", "c", "https://wiki.example.com/a?b=1&c=2", "https://wiki.example.com/a?b=1&c=2"),
    ]  # fmt: skip
    result = ChainResult(ResultKind.ANSWER, "Install it [1][2].", "t", "q", "en", sources=sources)
    (message,) = answer_messages(result)
    assert "[1] VPN &lt;setup&gt;" in message
    assert '<a href="https://wiki.example.com/a?b=1&amp;c=2">Wiki</a>' in message
    long = ChainResult(ResultKind.ANSWER, "x " * 3000, "t", "q", "en", sources=sources)
    pieces = answer_messages(long, limit=1000)
    assert pieces[-1].startswith("x") or pieces[-1].startswith("<b>Sources")
    assert all(len(p) <= 1000 for p in pieces)


def test_rate_limit_window() -> None:
    limiter = MemoryRateLimiter(per_minute=2)
    assert limiter.check(1, now=0.0) == 0
    assert limiter.check(1, now=1.0) == 0
    assert limiter.check(1, now=2.0) == pytest.approx(58.0)
    assert limiter.check(2, now=2.0) == 0
    assert limiter.check(1, now=60.5) == 0


async def test_rate_limit_shared_by_replicas_in_redis() -> None:
    import fakeredis

    redis = fakeredis.FakeAsyncRedis()
    replicas = [RedisRateLimiter(redis, per_minute=3) for _ in range(2)]
    waits = [await replicas[i % 2].wait_s(7) for i in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 55 < waits[3] <= 60
    assert await replicas[0].wait_s(8) == 0
    # A refused question is not counted: the user is not locked out for longer.
    assert await redis.zcard("kb:rate:7") == 3


@pytest.mark.parametrize("token", ["", "change-me", "your-token", "<token>", "nocolon"])
def test_placeholder_token_is_refused(token: str) -> None:
    settings = without_env(BotSettings, token=token)
    with pytest.raises(ValueError, match="BOT_TOKEN"):
        settings.require_token()


def test_webhook_needs_a_real_secret() -> None:
    with pytest.raises(ValueError, match="BOT_WEBHOOK_SECRET"):
        without_env(
            BotSettings, webhook_url="https://bot.example.com/hook", webhook_secret="change-me"
        )


async def test_conversation_survives_redis_storage() -> None:
    """What a chat remembers round-trips through the Redis storage replicas share (JSON only),
    with the configured TTL on the key."""
    import fakeredis
    from aiogram.fsm.context import FSMContext
    from aiogram.fsm.storage.base import StorageKey
    from aiogram.fsm.storage.redis import RedisStorage

    from app.bot import conversation

    redis = fakeredis.FakeAsyncRedis()
    storage = RedisStorage(redis, state_ttl=600, data_ttl=600)
    key = StorageKey(bot_id=1, chat_id=10, user_id=10)
    state = FSMContext(storage, key)
    talk = await conversation.load(state)
    talk.collection = "company"
    talk.remember("How many days?", "25 [1].", keep_turns=2)
    talk.uploads.append(conversation.PendingUpload("file-1", "a.md", 12))
    talk.question, talk.options = "How much leave?", ["Annual leave", "Sick leave"]
    await conversation.save(state, talk)
    again = await conversation.load(FSMContext(RedisStorage(redis), key))
    assert again == talk
    ttls = [await redis.ttl(name) for name in await redis.keys("*")]
    assert ttls
    assert all(0 < ttl <= 600 for ttl in ttls)
    await storage.close()
