"""`forget-user` against the real stores: a real redis-server with aiogram's RedisStorage, the
embedded Qdrant store with the knowledge loop's records and cards, and Langfuse's public API
through the local receiver (traces exported by the real SDK, deleted through its API client)."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.redis import RedisStorage
from langfuse.api import AsyncLangfuseAPI
from redis.asyncio import Redis

from app.bot import conversation
from app.bot.limits import RedisRateLimiter
from app.loop.cards import Asker, Card, CardKind, CardStore
from app.loop.records import GapRecord, LoopRecords, Outcome
from app.ops.forget import forget_user
from app.ops.state import ExpiringMemoryStorage
from app.ops.traces import TraceAdmin
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from tests.fakes.langfuse_server import SECRET_KEY, FakeLangfuse, LangfuseFactory

pytest_plugins = ["tests.fakes.langfuse_server"]

BOT, ME, OTHER, GROUP = 999, 42, 77, -100500
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def admin_of(server: FakeLangfuse, public_key: str) -> TraceAdmin:
    """The trace admin on the receiver, as the CLI builds it from the LANGFUSE_* keys."""
    api = AsyncLangfuseAPI(
        base_url=server.base_url, username=public_key, password=SECRET_KEY, timeout=5
    )
    return TraceAdmin(api)


def traced(tracer: Tracer, run: str, user: str) -> str:
    """One question's trace (a root and a step) for a user; returns its id."""
    trace_id = f"{abs(hash(run)):032x}"[:32]
    question = {"message": run}
    with (
        tracer.run(trace_id=trace_id, name="question", input=question, user_id=user),
        tracer.step("retrieve", {"query": run}),
    ):
        pass
    return trace_id


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _fill_redis(redis: Redis) -> None:
    """Conversations of ME (private chat, a group, a forum topic) and OTHER, and the bot's
    message records: answers to each, and a comment request to ME."""
    storage = RedisStorage(redis)
    for chat, user, thread in [(ME, ME, None), (GROUP, ME, None), (GROUP, ME, 5),
                               (GROUP, OTHER, None), (OTHER, OTHER, None)]:  # fmt: skip
        key = StorageKey(bot_id=BOT, chat_id=chat, user_id=user, thread_id=thread)
        await storage.set_data(key, {"collection": "company", "history": [["user", "hi"]]})
    await conversation.mark_messages(storage, BOT, ME, [1, 2], {"trace": "t1", "asker": ME})
    await conversation.mark_messages(storage, BOT, GROUP, [3], {"trace": "t2", "asker": ME})
    await conversation.mark_messages(storage, BOT, GROUP, [4], {"trace": "t3", "asker": OTHER})
    await conversation.mark_messages(storage, BOT, GROUP, [5], {"trace": "t3", "comment_by": ME})
    await RedisRateLimiter(redis, 10).wait_s(ME)


async def test_forget_user_removes_them_from_every_store_and_only_them(  # noqa: PLR0917
    redis: Redis,
    edge_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,
) -> None:
    await _fill_redis(redis)
    loop = LoopRecords(
        edge_store, DenseEmbedders.of(dense_embedder), sparse_embedder, language="en",
        keep_users=True,
    )  # fmt: skip
    for user in (ME, OTHER):
        await loop.add(
            GapRecord(f"vpn question of {user}", "vpn", ("company",), Outcome.NOT_FOUND,
                      user=str(user))
        )  # fmt: skip
    cards = CardStore(loop)
    for user in (ME, OTHER):
        asker = Asker(user_id=user, chat_id=user, name=f"user {user}")
        await cards.save(
            Card(kind=CardKind.ESCALATION, question="How do I get a badge?", query="badge",
                 collections=["company"], collection="company", asker=asker)
        )  # fmt: skip
    client = make_langfuse()
    tracer = Tracer(client)
    mine = {traced(tracer, "q1", str(ME)), traced(tracer, "q2", str(ME))}
    theirs = traced(tracer, "q3", str(OTHER))
    tracer.flush()
    admin = admin_of(langfuse_server, "pk-lf-admin")

    report = await forget_user(ME, store=edge_store, redis=redis, traces=admin)

    assert report.failed == {}
    assert report.removed == {
        "conversation_state": 3,  # the private chat, the group, the forum topic
        "message_records": 4,  # two answers in the private chat, one in the group, a comment
        "loop_records": 1,
        "loop_cards": 1,
        "traces": 2,
    }
    assert "cached_answers" in report.skipped
    left = sorted(k.decode() for k in await redis.keys("*"))
    assert left == sorted(
        [f"fsm:{GROUP}:{OTHER}:data", f"fsm:{OTHER}:{OTHER}:data", f"fsm:{GROUP}:4:{BOT}:data"]
    )
    assert [r.user for r in await loop.since(LONG_AGO)] == [str(OTHER)]
    assert [c.asker.user_id for c in await cards.all()] == [OTHER]
    assert langfuse_server.deleted_traces() == mine
    listed = {o.trace_id for o in (await admin.api.observations.get_many()).data}
    assert listed == {theirs}
    # Nothing is left to find: a second run removes nothing and fails nowhere.
    again = await forget_user(ME, store=edge_store, redis=redis, traces=admin)
    assert set(again.removed.values()) == {0}
    assert again.failed == {}


async def test_a_store_that_fails_is_reported_and_the_others_still_run(
    edge_store: EdgeStore,
) -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    report = await forget_user(ME, store=edge_store, redis=unreachable, traces=None)
    await unreachable.aclose()
    assert report.failed == {"conversation_state": "ConnectionError"}
    assert report.removed == {"loop_records": 0, "loop_cards": 0}
    assert "traces" in report.skipped
    assert any(line.startswith("FAILED conversation_state") for line in report.lines())


async def test_memory_state_expires_after_the_ttl_and_forgets_a_user() -> None:
    now = [1000.0]
    storage = ExpiringMemoryStorage(ttl_s=60, clock=lambda: now[0])
    mine = StorageKey(bot_id=BOT, chat_id=ME, user_id=ME)
    record = StorageKey(bot_id=BOT, chat_id=GROUP, user_id=BOT, thread_id=7)
    await storage.set_data(mine, {"collection": "company"})
    await storage.set_data(record, {"trace": "t", "asker": OTHER})
    now[0] += 59
    assert await storage.get_data(mine) == {"collection": "company"}
    await storage.set_data(record, {"trace": "t", "asker": OTHER})  # written again: time restarts
    now[0] += 2
    assert await storage.get_data(mine) == {}
    assert await storage.get_value(mine, "collection") is None
    assert await storage.get_data(record) == {"trace": "t", "asker": OTHER}
    now[0] += 60
    assert storage.sweep() == 1
    assert not storage.storage, "expired keys are gone, and reads left no empty records"
    await storage.set_data(mine, {"collection": "company"})
    assert storage.forget_user(ME) == 1
    assert await storage.get_data(mine) == {}


def test_the_command_reports_per_store_with_one_json_line(
    tmp_path: Path, redis_url: str, langfuse_server: FakeLangfuse
) -> None:
    async def fill() -> None:
        client = Redis.from_url(redis_url)
        await _fill_redis(client)
        await client.aclose()

    asyncio.run(fill())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "QDRANT_"))}
    env |= {
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "REDIS_URL": redis_url,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-cli",
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": langfuse_server.base_url,
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "forget-user", str(ME), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "removed conversation_state: 3" in lines
    report = json.loads(lines[-1])
    assert report["user_id"] == ME
    assert report["removed"]["message_records"] == 4
    assert report["removed"]["traces"] == 0
    assert report["failed"] == {}
    lookups = langfuse_server.requests_to("/api/public/v2/observations", "GET")
    assert [r.query["userId"] for r in lookups] == [str(ME)]


def test_the_command_refuses_an_id_that_is_not_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "forget-user", "@someone"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not a Telegram user id" in done.stderr
