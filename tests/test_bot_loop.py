"""The knowledge loop through the fake Bot API: questions the knowledge base fails are recorded,
an owner sees them grouped in /gaps (strangers and owners of other collections do not), answers
one, and the next employee who asks gets the answer from the new document."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiogram import Dispatcher

from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher
from app.bot.locks import MemoryLocks
from app.bot.settings import BotSettings
from app.chain.chain import Chain
from app.loop.digest import WEEKDAYS, Digest, last_due
from app.loop.records import LoopRecords
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, SAMPLES, IngestorFactory, without_env
from tests.fakes.llm import Call, ScriptedLLM
from tests.fakes.telegram_server import BotMessage, FakeTelegramServer

pytest_plugins = ["tests.fakes.telegram_server"]
pytestmark = pytest.mark.slow

EMPLOYEE, COLLEAGUE, OWNER, FINANCE_OWNER, STRANGER = 1, 2, 111, 333, 3
COLLECTIONS = f"""
collections:
  - name: company
    title: Company handbook
    readers: {{users: [{EMPLOYEE}, {COLLEAGUE}]}}
    owners: [{OWNER}]
  - name: finance
    title: Finance
    readers: {{users: [{FINANCE_OWNER}]}}
    owners: [{FINANCE_OWNER}]
"""
ANSWER = "Ask the front desk on floor 1: parking permits are free and valid for a year."


def relevant(call: Call) -> str:
    """Only a passage about parking answers a parking question (the samples have none)."""
    text = call.messages[-1].content.lower()
    return "YES" if "parking" not in text or "front desk" in text else "NO"


@dataclass
class Env:
    telegram: FakeTelegramServer
    llm: ScriptedLLM
    dp: Dispatcher


@pytest.fixture
async def env(  # noqa: PLR0917 - pytest passes fixtures by name
    telegram_server: FakeTelegramServer,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
    make_ingestor: IngestorFactory,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    store = EdgeStore(tmp_path / "qdrant")
    ingestor = make_ingestor(store, chunk_tokens=None)
    await ingestor.ingest(discover([SAMPLES / "en"]), "company")
    path = tmp_path / "collections.yaml"
    path.write_text(COLLECTIONS)
    llm = ScriptedLLM(replies={"relevance": relevant})
    dense = DenseEmbedders.of(dense_embedder)
    tracer = Tracer(None)
    chain = Chain(
        searcher=HybridSearcher(store, dense, sparse_embedder, search_settings),
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=PromptStore(PROMPTS),
        tracer=tracer,
        settings=without_env(ChainSettings),
    )
    settings = without_env(BotSettings, token=telegram_server.token, draft_interval_s=0.1)
    loop = LoopRecords(store, dense, sparse_embedder, language="en")
    deps = BotDeps(
        chain,
        load_collections(path, settings.admins),
        ingestor,
        tracer,
        store,
        settings,
        loop=loop,
    )
    dp = build_dispatcher(deps)
    bot = telegram_server.new_bot()
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    await telegram_server.wait_for_poll()
    yield Env(telegram_server, llm, dp)
    await dp.stop_polling()
    await polling
    await store.close()


async def reply(env: Env, chat_id: int, contains: str, wait_s: float = 30.0) -> BotMessage:
    return await env.telegram.wait_for_message(
        chat_id, lambda m: contains in (m.plain_text or ""), timeout=wait_s
    )


def buttons(message: BotMessage) -> list[str]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [button["callback_data"] for row in rows for button in row]


async def test_gaps_reach_the_owner_and_an_answer_becomes_knowledge(env: Env) -> None:
    telegram = env.telegram
    # Two employees ask what the knowledge base does not say; one rates an answer down.
    telegram.push_message(EMPLOYEE, "How do I get a parking permit?")
    await reply(env, EMPLOYEE, "could not find")
    telegram.push_message(COLLEAGUE, "Where can I get a parking permit for my car?")
    await reply(env, COLLEAGUE, "could not find")
    telegram.push_message(COLLEAGUE, "How many vacation days do I get?")
    answer = await reply(env, COLLEAGUE, "Sources:")
    down = next(b for b in buttons(answer) if b.startswith("fb:") and b.endswith(":0"))
    telegram.push_callback(COLLEAGUE, down, answer.message_id)
    await reply(env, COLLEAGUE, "What was wrong?")
    # Recorded after the replies (the 👎 after asking for a comment): wait for all three.
    await recorded(env, 3)

    # The owner sees both gaps, the parking one counted twice and first.
    telegram.push_message(OWNER, "/gaps")
    report = await reply(env, OWNER, "Unanswered questions")
    text = report.plain_text or ""
    assert text.index("parking permit") < text.index("vacation days")
    assert "2x" in text
    assert [b for b in buttons(report) if b.startswith("gap:")] == ["gap:0", "gap:1"]

    # A stranger owns nothing; the finance owner has no gaps; a group gets pointed away.
    telegram.push_message(STRANGER, "/gaps")
    await reply(env, STRANGER, "only the owners")
    telegram.push_message(FINANCE_OWNER, "/gaps")
    await reply(env, FINANCE_OWNER, "No unanswered questions")
    telegram.push_message(OWNER, "/gaps", chat_id=-100, chat_type="group")
    await reply(env, -100, "private chat")
    assert all("parking" not in (m.plain_text or "") for m in telegram.sent_messages(-100))

    # The owner answers the parking question as a reply to the bot's request.
    telegram.push_callback(OWNER, "gap:0", report.message_id)
    request = await reply(env, OWNER, "Write the answer")
    assert "parking permit" in (request.plain_text or "")
    telegram.push_message(OWNER, ANSWER, reply_to_message_id=request.message_id)
    await reply(env, OWNER, "Saved to Company handbook")

    # The next employee who asks gets the answer from the new document.
    telegram.clear_records()
    telegram.push_message(EMPLOYEE, "Where do I get a parking permit?")
    answer = await reply(env, EMPLOYEE, "Sources:")
    assert "parking permit" in (answer.plain_text or "").lower()
    answer_call = next(c for c in env.llm.calls[::-1] if c.step == "answer")
    assert "front desk on floor 1" in answer_call.messages[-1].content


async def test_the_weekly_digest_reaches_each_owner_once(env: Env) -> None:
    telegram = env.telegram
    # The owners have started the bot (a bot cannot write first to someone who has not).
    for owner in (OWNER, FINANCE_OWNER):
        telegram.push_message(owner, "/start")
        await telegram.wait_for_message(owner, lambda m: True, timeout=30)
    telegram.push_message(EMPLOYEE, "How do I get a parking permit?")
    await reply(env, EMPLOYEE, "could not find")
    telegram.push_message(COLLEAGUE, "Where can I get a parking permit for my car?")
    await reply(env, COLLEAGUE, "could not find")
    await recorded(env, 2)
    now = datetime.now(UTC)

    def replica() -> Digest:
        # Another replica, or the bot after a restart: the same store, its own process state.
        return Digest(
            env.dp["loop"],
            env.dp["access"],
            MemoryLocks(),
            env.dp.storage,
            weekday=WEEKDAYS[now.weekday()],
            hour=0,
        )

    bot = telegram.new_bot()
    try:
        off = Digest(
            env.dp["loop"], env.dp["access"], MemoryLocks(), env.dp.storage, weekday="off", hour=0
        )
        assert await off.send_due(bot, now) == 0
        # Due today from midnight: only the owner with gaps gets one, in a private chat.
        assert await replica().send_due(bot, now) == 1
        digest = await reply(env, OWNER, "This week's unanswered questions")
        assert "parking permit" in (digest.plain_text or "")
        assert "2x" in (digest.plain_text or "")
        assert [b for b in buttons(digest) if b.startswith("gap:")] == ["gap:0"]
        for other in (FINANCE_OWNER, STRANGER, EMPLOYEE):
            assert all(
                "This week" not in (m.plain_text or "") for m in telegram.sent_messages(other)
            )
        # Sent once that week, whichever replica looks again; next week is due again.
        assert await replica().send_due(bot, now + timedelta(hours=5)) == 0
        # A week later it is due again, with that week's questions only.
        telegram.push_message(EMPLOYEE, "Is there bicycle parking at the office?")
        await recorded(env, 3)
        later = now + timedelta(days=7)
        assert last_due(later, now.weekday(), 0) > now
        assert await replica().send_due(bot, later) == 1
        second = await reply(env, OWNER, "bicycle parking")
        assert "permit" not in (second.plain_text or "")
    finally:
        await bot.session.close()

    # "Answer 1" under the digest opens the same answer flow as /gaps.
    telegram.push_callback(OWNER, "gap:0", digest.message_id)
    request = await reply(env, OWNER, "Write the answer")
    assert "parking permit" in (request.plain_text or "")


async def recorded(env: Env, count: int) -> None:
    """Wait until the loop holds this many records (they are written after the reply)."""
    loop = env.dp["loop"]
    since = datetime.now(UTC) - timedelta(days=1)
    for _ in range(100):
        if len(await loop.since(since)) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} loop records were not written")


def test_the_digest_is_due_from_its_weekday_and_hour() -> None:
    wednesday = datetime(2026, 12, 2, 8, 30, tzinfo=UTC)
    assert last_due(wednesday, WEEKDAYS.index("mon"), 9) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert last_due(wednesday, WEEKDAYS.index("wed"), 9) == datetime(2026, 11, 25, 9, tzinfo=UTC)
    assert last_due(wednesday, WEEKDAYS.index("wed"), 8) == datetime(2026, 12, 2, 8, tzinfo=UTC)
