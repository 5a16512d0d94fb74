"""The answer cache in the bot: the real Dispatcher polling the fake Bot API server, the real
chain and cache on Qdrant Edge, and the Langfuse SDK exporting to the local receiver. A cached
answer has its own trace tagged "cache-hit", rating buttons and a "Fresh answer" button; a 👎
on it evicts it."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher
from app.bot.settings import BotSettings
from app.cache import AnswerCache
from app.cache.trace import HIT_TAG
from app.chain.chain import Chain
from app.prompts import PromptStore
from app.settings import CacheSettings, ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, SAMPLES, IngestorFactory, without_env
from tests.fakes.langfuse_server import FakeLangfuse, LangfuseFactory
from tests.fakes.llm import ScriptedLLM
from tests.fakes.telegram_server import BotMessage, FakeTelegramServer

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]

READER = 1
COLLECTIONS = f"""
collections:
  - name: company
    title: Company handbook
    readers: {{users: [{READER}]}}
"""
QUESTION = "How do I connect to the VPN?"


@dataclass
class Env:
    """What a test drives and inspects."""

    telegram: FakeTelegramServer
    llm: ScriptedLLM
    tracer: Tracer
    langfuse: FakeLangfuse


@pytest.fixture
async def env(  # noqa: PLR0917 - pytest passes fixtures by name
    telegram_server: FakeTelegramServer,
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,
    edge_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
    make_ingestor: IngestorFactory,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    """The bot with an answer cache, polling until the test ends."""
    ingestor = make_ingestor(edge_store, chunk_tokens=None)
    await ingestor.ingest(discover([SAMPLES / "en"]), "company")
    path = tmp_path / "collections.yaml"
    path.write_text(COLLECTIONS)
    llm = ScriptedLLM()
    tracer = Tracer(make_langfuse())
    embedders = DenseEmbedders.of(dense_embedder)
    prompts = PromptStore(PROMPTS)
    chain = Chain(
        searcher=HybridSearcher(edge_store, embedders, sparse_embedder, search_settings),
        store=edge_store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=prompts,
        tracer=tracer,
        settings=without_env(ChainSettings),
        cache=AnswerCache(
            edge_store,
            embedders,
            sparse_embedder,
            prompts=prompts,
            settings=without_env(CacheSettings, mode="exact"),
            tracer=tracer,
        ),
    )
    settings = without_env(BotSettings, token=telegram_server.token, draft_interval_s=0.1)
    deps = BotDeps(
        chain, load_collections(path, settings.admins), ingestor, tracer, edge_store, settings
    )
    dp = build_dispatcher(deps)
    bot = telegram_server.new_bot()
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    await telegram_server.wait_for_poll()
    yield Env(telegram_server, llm, tracer, langfuse_server)
    await dp.stop_polling()
    await polling


def button_data(message: BotMessage) -> list[str]:
    """The callback data of a message's inline buttons."""
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [button["callback_data"] for row in rows for button in row]


def answers(env: Env) -> list[BotMessage]:
    """The reader's answers (messages with sources), in order."""
    sent = env.telegram.sent_messages(READER)
    return [m for m in sent if "Sources:" in (m.plain_text or "")]


async def answer_number(env: Env, n: int) -> BotMessage:
    """The n-th answer the reader got (waits for it)."""
    await env.telegram.wait_for(lambda: len(answers(env)) >= n, timeout=30)
    return answers(env)[n - 1]


async def test_a_cached_answer_is_traced_rated_and_can_be_refreshed(env: Env) -> None:
    env.telegram.push_message(READER, QUESTION)
    first = await answer_number(env, 1)
    assert not [d for d in button_data(first) if d.startswith("fresh")]
    env.telegram.push_message(READER, QUESTION)
    cached = await answer_number(env, 2)
    assert env.llm.steps().count("answer") == 1
    assert cached.plain_text == first.plain_text
    data = button_data(cached)
    assert [d for d in data if d.startswith("fb:")], "a cached answer can be rated"
    assert "fresh:1" in data
    # Its own trace, tagged as a hit; the first one is not.
    cached_trace = next(d for d in data if d.startswith("fb:")).split(":")[1]
    first_trace = button_data(first)[0].split(":")[1]
    assert cached_trace != first_trace
    env.tracer.flush()
    tags = await env.telegram.wait_for(
        lambda: {o["traceId"]: o["tags"] for o in env.langfuse.observations()}.get(cached_trace),
        timeout=10,
    )
    assert HIT_TAG in tags
    assert "company" in tags
    first_tags = {o["traceId"]: o["tags"] for o in env.langfuse.observations()}[first_trace]
    assert HIT_TAG not in first_tags
    # "Fresh answer": the LLM answers again, and the button leaves the cached answer.
    env.llm.replies["answer"] = "A fresh answer [1]."
    env.telegram.push_callback(READER, "fresh:1", cached.message_id)
    fresh = await answer_number(env, 3)
    assert "A fresh answer" in (fresh.plain_text or "")
    assert env.llm.steps().count("answer") == 2
    assert "fresh:1" not in button_data(fresh)
    edited = env.telegram.message(READER, cached.message_id) or {}
    assert "fresh:1" not in str(edited.get("reply_markup"))
    # The fresh answer replaced the entry: the next asker gets it from the cache.
    env.telegram.push_message(READER, QUESTION)
    assert "A fresh answer" in ((await answer_number(env, 4)).plain_text or "")
    assert env.llm.steps().count("answer") == 2


async def test_a_thumbs_down_evicts_the_cached_answer(env: Env) -> None:
    env.telegram.push_message(READER, QUESTION)
    await answer_number(env, 1)
    env.telegram.push_message(READER, QUESTION)
    cached = await answer_number(env, 2)
    assert "fresh:1" in button_data(cached)
    down = next(d for d in button_data(cached) if d.startswith("fb:") and d.endswith(":0"))
    env.telegram.push_callback(READER, down, cached.message_id)
    await env.telegram.wait_for_message(READER, lambda m: "What was wrong?" in (m.plain_text or ""))
    env.telegram.push_message(READER, QUESTION)
    again = await answer_number(env, 3)
    assert "fresh:1" not in button_data(again)
    assert env.llm.steps().count("answer") == 2
