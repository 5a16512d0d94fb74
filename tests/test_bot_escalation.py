"""Escalations and the review queue through the fake Bot API, with several people at once: an
employee asks an expert, the expert's reply is relayed (in the employee's chat and topic), a
second expert is told it was answered, the answer is saved and used for the next question; a
restart in the middle keeps the card; open cards are reminded; a 👎 becomes a review card whose
"Add to golden set" writes a golden item. A stranger never sees a card."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram import Dispatcher

from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher
from app.bot.settings import BotSettings
from app.chain.chain import Chain
from app.eval.golden import read_golden
from app.loop.records import LoopRecords
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.errors import ConfigurationError
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, SAMPLES, IngestorFactory, without_env
from tests.fakes.langfuse_server import FakeLangfuse, LangfuseFactory
from tests.fakes.llm import Call, ScriptedLLM
from tests.fakes.telegram_server import BotMessage, FakeTelegramServer

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]
pytestmark = pytest.mark.slow

EMPLOYEE, COLLEAGUE, STRANGER, OWNER = 1, 2, 3, 111
EXPERT, SECOND_EXPERT, SUPPORT = 222, 223, 444
EXPERTS_CHAT, REVIEW_CHAT, TEAM_CHAT = -200, -300, -100
COLLECTIONS = f"""
collections:
  - name: company
    title: Company handbook
    readers: {{users: [{EMPLOYEE}, {COLLEAGUE}], groups: [{TEAM_CHAT}]}}
    owners: [{OWNER}]
    experts: {{chat: {EXPERTS_CHAT}}}
"""
ANSWER = "Ask the front desk on floor 1: parking permits are free and valid for a year."


def relevant(call: Call) -> str:
    """Only a passage about parking answers a parking question (the samples have none)."""
    text = call.messages[-1].content.lower()
    return "YES" if "parking" not in text or "front desk" in text else "NO"


@dataclass
class Env:
    """The bot on a store folder, restartable (a new store, loop and Dispatcher on it)."""

    telegram: FakeTelegramServer
    llm: ScriptedLLM
    path: Path
    make_ingestor: IngestorFactory
    dense: DenseEmbedders
    sparse: SparseEmbedder
    search: SearchSettings
    settings: dict[str, Any] = field(default_factory=dict)
    tracer: Tracer = field(default_factory=lambda: Tracer(None))
    store: EdgeStore | None = None
    dp: Dispatcher | None = None
    polling: "asyncio.Task[None] | None" = None

    async def start(self) -> None:
        store = self.store = EdgeStore(self.path / "qdrant")
        chain = Chain(
            searcher=HybridSearcher(store, self.dense, self.sparse, self.search),
            store=store,
            llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), self.llm),
            prompts=PromptStore(PROMPTS),
            tracer=self.tracer,
            settings=without_env(ChainSettings),
        )
        settings = without_env(
            BotSettings,
            token=self.telegram.token,
            draft_interval_s=0.1,
            edit_interval_s=0.2,
            review_chat=REVIEW_CHAT,
            golden_file=self.path / "golden.jsonl",
            **self.settings,
        )
        deps = BotDeps(
            chain,
            load_collections(self.path / "collections.yaml", settings.admins),
            self.make_ingestor(store, chunk_tokens=None),
            self.tracer,
            store,
            settings,
            loop=LoopRecords(store, self.dense, self.sparse, language="en"),
        )
        self.dp = build_dispatcher(deps)
        bot = self.telegram.new_bot()
        self.polling = asyncio.create_task(
            self.dp.start_polling(bot, handle_signals=False, polling_timeout=1)
        )
        await self.telegram.wait_for_poll()

    async def stop(self) -> None:
        assert self.dp is not None
        assert self.polling is not None
        assert self.store is not None
        await self.dp.stop_polling()
        await self.polling
        await self.store.close()


@pytest.fixture
async def make_env(  # noqa: PLR0917 - pytest passes fixtures by position
    telegram_server: FakeTelegramServer,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
    make_ingestor: IngestorFactory,
    tmp_path: Path,
) -> AsyncIterator[Any]:
    envs: list[Env] = []

    async def build(tracer: Tracer | None = None, **settings: Any) -> Env:
        store = EdgeStore(tmp_path / "qdrant")
        await make_ingestor(store, chunk_tokens=None).ingest(discover([SAMPLES / "en"]), "company")
        await store.close()
        (tmp_path / "collections.yaml").write_text(COLLECTIONS)
        for chat in (EXPERTS_CHAT, REVIEW_CHAT):
            telegram_server.add_chat(chat, "supergroup", title=f"chat {chat}")
        env = Env(
            telegram_server,
            ScriptedLLM(replies={"relevance": relevant}),
            tmp_path,
            make_ingestor,
            DenseEmbedders.of(dense_embedder),
            sparse_embedder,
            search_settings,
            settings,
            tracer or Tracer(None),
        )
        await env.start()
        envs.append(env)
        return env

    yield build
    for env in envs:
        await env.stop()


async def reply(env: Env, chat_id: int, contains: str, wait_s: float = 30.0) -> BotMessage:
    return await env.telegram.wait_for_message(
        chat_id, lambda m: contains in (m.plain_text or ""), timeout=wait_s
    )


def button(message: BotMessage, prefix: str) -> str:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return next(
        str(b["callback_data"])
        for row in rows
        for b in row
        if str(b["callback_data"]).startswith(prefix)
    )


def no_cards_for(telegram: FakeTelegramServer, chat_id: int) -> bool:
    return all("#q" not in (m.plain_text or "") for m in telegram.sent_messages(chat_id))


async def ask_an_expert(env: Env, user: int, question: str, **where: Any) -> BotMessage:
    """The user asks what the knowledge base does not say and presses "Ask an expert"; the
    card the experts get."""
    chat = where.get("chat_id", user)
    env.telegram.push_message(user, question, **where)
    await reply(env, chat, "could not find")
    offer = await reply(env, chat, "An expert can")
    if chat != user:
        # In a group, only the person who asked may press it.
        pushed = env.telegram.push_callback(
            COLLEAGUE, button(offer, "esc"), offer.message_id, chat_id=chat
        )
        answered = await env.telegram.wait_for(
            lambda: env.telegram.callback_answer(pushed.callback_query_id or ""), 10.0, "an alert"
        )
        assert "Only the person who asked" in str(answered)
    env.telegram.push_callback(user, button(offer, "esc"), offer.message_id, chat_id=chat)
    await reply(env, chat, "Sent to the experts of Company handbook")
    return await reply(env, EXPERTS_CHAT, "A question for the experts")


async def test_an_experts_answer_is_relayed_saved_and_used_next_time(make_env: Any) -> None:
    env: Env = await make_env()
    telegram = env.telegram
    # A stranger reads nothing, gets no offer, and no card is ever sent to them.
    telegram.push_message(STRANGER, "How do I get a parking permit?")
    await reply(env, STRANGER, "no access")

    card = await ask_an_expert(env, EMPLOYEE, "How do I get a parking permit?")
    text = card.plain_text or ""
    assert "How do I get a parking permit?" in text
    assert "nothing found" in text
    assert "Asked by: #" in text  # anonymous by default
    # Only the employee who asked may press their button.
    offer = await reply(env, EMPLOYEE, "An expert can")
    assert (offer.reply_markup or {}).get("inline_keyboard") in (None, [])

    # The expert answers by replying to the card: relayed to the employee, with its buttons.
    telegram.push_message(
        EXPERT,
        ANSWER,
        chat_id=EXPERTS_CHAT,
        chat_type="supergroup",
        reply_to_message_id=card.message_id,
        first_name="Erika",
    )
    relayed = await reply(env, EMPLOYEE, "Answer from an expert (Erika)")
    assert ANSWER in (relayed.plain_text or "")
    assert button(relayed, "xfb:").startswith("xfb:")
    delivered = await reply(env, EXPERTS_CHAT, "Delivered")
    answered = await reply(env, EXPERTS_CHAT, "Answered by Erika")
    assert answered.message_id == card.message_id  # the card itself says so

    # A second expert is told it was answered, and may still save theirs.
    telegram.push_message(
        SECOND_EXPERT,
        "Front desk, floor 1.",
        chat_id=EXPERTS_CHAT,
        chat_type="supergroup",
        reply_to_message_id=card.message_id,
        first_name="Sam",
    )
    late = await reply(env, EXPERTS_CHAT, "already answered by Erika")
    assert button(late, "kbsave:").endswith(":1")
    assert (
        len(
            [
                m
                for m in telegram.sent_messages(EMPLOYEE)
                if "from an expert" in (m.plain_text or "")
            ]
        )
        == 1
    )

    # The employee rates the expert's answer; the expert saves it to the knowledge base.
    telegram.push_callback(EMPLOYEE, button(relayed, "xfb:"), relayed.message_id)
    telegram.push_callback(
        EXPERT, button(delivered, "kbsave:"), delivered.message_id, chat_id=EXPERTS_CHAT
    )
    await reply(env, EXPERTS_CHAT, "Saved to Company handbook")

    # The next employee who asks gets the answer from the new document.
    telegram.clear_records()
    telegram.push_message(COLLEAGUE, "Where do I get a parking permit?")
    answer = await reply(env, COLLEAGUE, "Sources:")
    assert "parking permit" in (answer.plain_text or "").lower()
    answer_call = next(c for c in env.llm.calls[::-1] if c.step == "answer")
    assert "front desk on floor 1" in answer_call.messages[-1].content
    assert no_cards_for(telegram, STRANGER)


async def test_a_restart_in_the_middle_still_relays_to_the_topic(make_env: Any) -> None:
    env: Env = await make_env(asker_identity="name")
    card = await ask_an_expert(
        env,
        EMPLOYEE,
        "@kb_test_bot How do I get a parking permit?",
        chat_id=TEAM_CHAT,
        chat_type="supergroup",
        message_thread_id=7,
        first_name="Emma",
    )
    assert "Asked by: Emma" in (card.plain_text or "")

    # The bot restarts: a new store, loop and Dispatcher on the same folder.
    await env.stop()
    await env.start()
    env.telegram.push_message(
        EXPERT,
        ANSWER,
        chat_id=EXPERTS_CHAT,
        chat_type="supergroup",
        reply_to_message_id=card.message_id,
        first_name="Erika",
    )
    relayed = await reply(env, TEAM_CHAT, "Answer from an expert")
    assert relayed.params.get("message_thread_id") == 7
    await reply(env, EXPERTS_CHAT, "Delivered")


async def test_an_open_escalation_is_reminded(make_env: Any) -> None:
    env: Env = await make_env(escalation_remind_s=0.5)
    card = await ask_an_expert(env, EMPLOYEE, "How do I get a parking permit?")
    reminder = await reply(env, EXPERTS_CHAT, "Still waiting for an answer")
    assert reminder.reply_to_message_id == card.message_id
    # A reply to the reminder answers the card too.
    env.telegram.push_message(
        EXPERT,
        ANSWER,
        chat_id=EXPERTS_CHAT,
        chat_type="supergroup",
        reply_to_message_id=reminder.message_id,
    )
    await reply(env, EMPLOYEE, "Answer from an expert")
    count = len(
        [
            m
            for m in env.telegram.sent_messages(EXPERTS_CHAT)
            if "Still waiting" in (m.plain_text or "")
        ]
    )
    await asyncio.sleep(1.5)
    after = len(
        [
            m
            for m in env.telegram.sent_messages(EXPERTS_CHAT)
            if "Still waiting" in (m.plain_text or "")
        ]
    )
    assert after == count  # answered: no more reminders


async def test_a_thumbs_down_becomes_a_review_card_and_a_golden_item(make_env: Any) -> None:
    env: Env = await make_env()
    telegram = env.telegram
    telegram.push_message(EMPLOYEE, "How many vacation days do I get?")
    answer = await reply(env, EMPLOYEE, "Sources:")
    telegram.push_callback(
        EMPLOYEE, button(answer, "fb:").rsplit(":", 1)[0] + ":0", answer.message_id
    )
    prompt = await reply(env, EMPLOYEE, "What was wrong?")
    await reply(env, EMPLOYEE, "An expert can")  # the offer under the request
    card = await reply(env, REVIEW_CHAT, "An answer was rated down")
    text = card.plain_text or ""
    assert "How many vacation days do I get?" in text
    assert "Bot's answer" in text
    assert "vacation-policy" in text  # its sources

    # The comment joins the card.
    telegram.push_message(EMPLOYEE, "The number is outdated", reply_to_message_id=prompt.message_id)
    await reply(env, EMPLOYEE, "Thank you")
    await reply(env, REVIEW_CHAT, "The number is outdated")

    # Support adds it to the golden set, with the correct answer as a reply.
    telegram.push_callback(
        SUPPORT,
        button(card, "rv:").rsplit(":", 1)[0] + ":gold",
        card.message_id,
        chat_id=REVIEW_CHAT,
    )
    request = await reply(env, REVIEW_CHAT, "correct answer")
    telegram.push_message(
        SUPPORT,
        "25 working days\n5 days carry over",
        chat_id=REVIEW_CHAT,
        chat_type="supergroup",
        reply_to_message_id=request.message_id,
    )
    saved = await reply(env, REVIEW_CHAT, "Added to the golden set")
    [item] = read_golden(env.path / "golden.jsonl")
    assert item.question == "How many vacation days do I get?"
    assert item.collections == ("company",)
    assert item.kind == "answer"
    assert item.facts == ("25 working days", "5 days carry over")
    assert any("vacation" in doc for doc in item.documents)
    assert item.id in (saved.plain_text or "")
    line = json.loads((env.path / "golden.jsonl").read_text().splitlines()[0])
    assert set(line) == {"id", "question", "collections", "kind", "documents", "facts"}

    # Escalate to owners: the same question reaches the experts; then Done closes it.
    prefix = button(card, "rv:").rsplit(":", 1)[0]
    telegram.push_callback(SUPPORT, prefix + ":escalate", card.message_id, chat_id=REVIEW_CHAT)
    expert_card = await reply(env, EXPERTS_CHAT, "A question for the experts")
    assert "How many vacation days do I get?" in (expert_card.plain_text or "")
    telegram.push_callback(SUPPORT, prefix + ":done", card.message_id, chat_id=REVIEW_CHAT)
    closed = await reply(env, REVIEW_CHAT, "Closed by")
    assert closed.message_id == card.message_id
    assert not closed.reply_markup
    assert no_cards_for(telegram, STRANGER)


async def test_with_langfuse_cards_link_the_trace_and_golden_items_join_the_dataset(
    make_env: Any, langfuse_server: FakeLangfuse, make_langfuse: LangfuseFactory
) -> None:
    tracer = Tracer(make_langfuse(), base_url=langfuse_server.base_url)
    env: Env = await make_env(tracer=tracer, golden_dataset="support-golden")
    telegram = env.telegram
    telegram.push_message(EMPLOYEE, "How many vacation days do I get?")
    answer = await reply(env, EMPLOYEE, "Sources:")
    down = button(answer, "fb:").rsplit(":", 1)[0] + ":0"
    trace_id = down.split(":")[1]
    telegram.push_callback(EMPLOYEE, down, answer.message_id)
    card = await reply(env, REVIEW_CHAT, "An answer was rated down")
    assert f'href="{langfuse_server.base_url}/trace/{trace_id}"' in (card.text or "")

    telegram.push_callback(
        SUPPORT,
        button(card, "rv:").rsplit(":", 1)[0] + ":gold",
        card.message_id,
        chat_id=REVIEW_CHAT,
    )
    request = await reply(env, REVIEW_CHAT, "correct answer")
    telegram.push_message(
        SUPPORT,
        "25 working days",
        chat_id=REVIEW_CHAT,
        chat_type="supergroup",
        reply_to_message_id=request.message_id,
    )
    await reply(env, REVIEW_CHAT, "Added to the golden set")
    [item] = langfuse_server.dataset_items("support-golden")
    assert item["sourceTraceId"] == trace_id
    assert item["input"]["question"] == "How many vacation days do I get?"
    assert item["expectedOutput"]["facts"] == ["25 working days"]


def test_the_collections_file_checks_experts(tmp_path: Path) -> None:
    path = tmp_path / "collections.yaml"
    path.write_text(COLLECTIONS.replace(f"{{chat: {EXPERTS_CHAT}}}", "{}"))
    with pytest.raises(ConfigurationError, match=r"experts.*need a chat, users, or both"):
        load_collections(path, ())
    path.write_text(COLLECTIONS.replace(f"{{chat: {EXPERTS_CHAT}}}", "{users: [5], chats: 1}"))
    with pytest.raises(ConfigurationError, match="chats"):
        load_collections(path, ())
    path.write_text(COLLECTIONS.replace(f"{{chat: {EXPERTS_CHAT}}}", "{users: [5, 6]}"))
    experts = load_collections(path, ()).collections["company"].experts
    assert experts is not None
    assert experts.chats == [5, 6]
    assert experts.includes(6, 6)
    assert not experts.includes(7, EXPERTS_CHAT)


async def test_replicas_remind_a_card_once_through_shared_locks(
    telegram_server: FakeTelegramServer,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    tmp_path: Path,
) -> None:
    """Two bot replicas (two card stores on one store and one Redis) find the same open card
    due at the same moment: the card's lock in Redis lets one of them remind it."""
    import fakeredis

    from app.bot.locks import RedisLocks
    from app.loop.cards import Asker, Card, CardKind, CardStore
    from app.loop.reminders import Reminders

    (tmp_path / "collections.yaml").write_text(COLLECTIONS)
    access = load_collections(tmp_path / "collections.yaml", ())
    telegram_server.add_chat(EXPERTS_CHAT, "supergroup", title="experts")
    store = EdgeStore(tmp_path / "qdrant")
    redis = fakeredis.FakeAsyncRedis()
    try:
        loop = LoopRecords(store, DenseEmbedders.of(dense_embedder), sparse_embedder)
        replicas = [CardStore(loop, RedisLocks(redis)) for _ in range(2)]
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        bot = telegram_server.new_bot()
        cards = []
        for n in range(4):
            posted = await bot.send_message(EXPERTS_CHAT, f"card {n}")
            card = Card(
                kind=CardKind.ESCALATION,
                question=f"Question {n} nobody answered?",
                query=f"question {n}",
                collections=["company"],
                collection="company",
                asker=Asker(user_id=EMPLOYEE, chat_id=EMPLOYEE, name="#1"),
                posted=[(EXPERTS_CHAT, posted.message_id)],
                created_at=long_ago,
            )
            await replicas[0].save(card)
            cards.append(card)
        reminders = [Reminders(cards_, access, every_s=3600) for cards_ in replicas]
        counts = await asyncio.gather(*(r.remind_due(bot) for r in reminders))
        await bot.session.close()
        assert sum(counts) == len(cards)
        sent = [
            m
            for m in telegram_server.sent_messages(EXPERTS_CHAT)
            if "Still waiting" in (m.plain_text or "")
        ]
        assert sorted(m.reply_to_message_id or 0 for m in sent) == sorted(
            c.posted[0][1] for c in cards
        )
        assert not await redis.keys("kb:lock:*"), "every card lock released"
    finally:
        await store.close()
