"""Access that follows the company's Telegram, and owners' uploads, end to end: the real
Dispatcher polling the fake Bot API server, membership answered by its getChatMember, the
collections file changed while the bot runs."""

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.fsm.storage.memory import MemoryStorage

from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher
from app.bot.locks import MemoryLocks
from app.bot.membership import Membership
from app.bot.settings import BotSettings
from app.chain.chain import Chain
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import Ingestor
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, IngestorFactory, without_env
from tests.fakes.langfuse_server import FakeLangfuse, LangfuseFactory
from tests.fakes.llm import ScriptedLLM
from tests.fakes.telegram_server import FakeTelegramServer
from tests.test_bot import (
    ADMIN,
    FINANCE_OWNER,
    GROUP,
    MULTI_OWNER,
    OWNER,
    READER,
    STRANGER,
    Env,
    bot_store,
    button_data,
    reply,
)

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]
__all__ = ["bot_store"]  # the fixture, shared with tests/test_bot.py

TEAM = -1001234  # the team chat whose members read "company"
MEMBER = 21
QUESTION = "How do I connect to the VPN?"
COLLECTIONS = f"""
collections:
  - name: company
    title: Company handbook
    readers: {{users: [{READER}], members_of: [{TEAM}], groups: [{GROUP}]}}
    owners: [{OWNER}, {MULTI_OWNER}]
  - name: finance
    title: Finance
    readers: {{users: [{MULTI_OWNER}]}}
    owners: [{FINANCE_OWNER}, {MULTI_OWNER}]
"""


@dataclass
class AccessEnv(Env):
    """Env, plus the collections file the running bot follows."""

    path: Path


class RoundTripStorage(MemoryStorage):
    """Memory storage with a pause per call, as Redis has: concurrent updates of one
    conversation interleave between reading and writing its state, as they do in production."""

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return await super().get_data(key)

    async def set_data(self, key: StorageKey, data: Any) -> None:
        await asyncio.sleep(0.01)
        await super().set_data(key, data)


StartBot = Callable[..., Awaitable[AccessEnv]]


@pytest.fixture
async def start_bot(  # noqa: PLR0917 - pytest passes fixtures by name, this one needs them all
    telegram_server: FakeTelegramServer,
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,
    bot_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
    make_ingestor: IngestorFactory,
    tmp_path: Path,
) -> AsyncIterator[StartBot]:
    """Start the bot on a collections file (re-read on every access, memberships never
    cached); it polls the fake server until the test ends."""
    running: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(
        collections: str = COLLECTIONS, storage: BaseStorage | None = None
    ) -> AccessEnv:
        path = tmp_path / "collections.yaml"
        path.write_text(collections)
        llm = ScriptedLLM(delta_delay_s=0.01)
        tracer = Tracer(make_langfuse())
        chain = Chain(
            searcher=HybridSearcher(
                bot_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
            ),
            store=bot_store,
            llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
            prompts=PromptStore(PROMPTS),
            tracer=tracer,
            settings=without_env(ChainSettings),
        )
        settings = without_env(
            BotSettings,
            token=telegram_server.token,
            admins=frozenset({ADMIN}),
            draft_interval_s=0.1,
            edit_interval_s=0.2,
        )
        access = load_collections(path, settings.admins, reload_s=0, membership_ttl_s=0)
        ingestor: Ingestor = make_ingestor(bot_store, chunk_tokens=None)
        deps = BotDeps(chain, access, ingestor, tracer, bot_store, settings)
        dp = build_dispatcher(deps, storage)
        dp.workflow_data.setdefault("locks", MemoryLocks())
        bot = telegram_server.new_bot()
        polling = asyncio.create_task(
            dp.start_polling(bot, handle_signals=False, polling_timeout=1)
        )
        running.append((dp, polling))
        await telegram_server.wait_for_poll()
        return AccessEnv(telegram_server, llm, tracer, langfuse_server, bot_store, ingestor, path)

    yield start
    for dp, polling in running:
        await dp.stop_polling()
        await polling


async def test_members_of_the_team_chat_read_until_they_leave(start_bot: StartBot) -> None:
    env = await start_bot()
    env.telegram.push_message(MEMBER, QUESTION)
    await reply(env, MEMBER, "no access")
    env.telegram.set_member(TEAM, MEMBER, "member")
    env.telegram.push_message(MEMBER, QUESTION)
    await reply(env, MEMBER, "Sources:")
    # Removed from the team chat: refused from the next question on.
    env.telegram.set_member(TEAM, MEMBER, "left")
    sent = len(env.telegram.sent_messages(MEMBER))
    env.telegram.push_message(MEMBER, QUESTION)
    refusal = await env.telegram.wait_for(
        lambda: env.telegram.sent_messages(MEMBER)[sent:], timeout=20
    )
    assert "no access" in (refusal[0].plain_text or "")
    asked = env.telegram.calls("getChatMember")
    assert {(c.params["chat_id"], c.params["user_id"]) for c in asked} == {(TEAM, MEMBER)}


async def test_the_team_chat_itself_reads_its_collection(start_bot: StartBot) -> None:
    env = await start_bot()
    env.telegram.push_message(
        STRANGER, f"@kb_test_bot {QUESTION}", chat_id=TEAM, chat_type="supergroup"
    )
    await reply(env, TEAM, "Sources:")
    # The group reads as a whole; nobody's membership needs asking.
    assert not env.telegram.calls("getChatMember")


@pytest.mark.parametrize(
    ("status", "is_member", "reads"),
    [
        ("creator", True, True),
        ("administrator", True, True),
        ("member", True, True),
        ("restricted", True, True),
        ("restricted", False, False),
        ("left", False, False),
        ("kicked", False, False),
    ],
)
async def test_membership_statuses(
    telegram_server: FakeTelegramServer, status: str, is_member: bool, reads: bool
) -> None:
    bot = telegram_server.new_bot()
    try:
        telegram_server.set_member(TEAM, MEMBER, status, is_member=is_member)
        assert await Membership(ttl_s=0).is_member(bot, TEAM, MEMBER) is reads
    finally:
        await bot.session.close()


async def test_membership_is_cached_and_errors_never_grant(
    telegram_server: FakeTelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    bot = telegram_server.new_bot()
    try:
        telegram_server.set_member(TEAM, MEMBER, "member")
        cached = Membership(ttl_s=60)
        assert await cached.is_member(bot, TEAM, MEMBER)
        telegram_server.set_member(TEAM, MEMBER, "left")
        assert await cached.is_member(bot, TEAM, MEMBER), "the answer holds for ttl_s"
        assert len(telegram_server.calls("getChatMember")) == 1
        # A group the bot is not in: refused, logged once, asked again only after a while.
        telegram_server.hide_chat(TEAM)
        failing = Membership(ttl_s=60, error_ttl_s=60)
        with caplog.at_level(logging.WARNING, logger="app.bot.membership"):
            assert not await failing.is_member(bot, TEAM, MEMBER)
            assert not await failing.is_member(bot, TEAM, MEMBER + 1)
            assert not await failing.is_member(bot, TEAM, MEMBER)
        assert len(telegram_server.calls("getChatMember")) == 3
        assert len([r for r in caplog.records if "cannot be checked" in r.message]) == 1
    finally:
        await bot.session.close()


async def test_collections_file_reloads_and_a_broken_one_keeps_the_rules(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    env = await start_bot()
    env.telegram.push_message(STRANGER, QUESTION)
    await reply(env, STRANGER, "no access")
    env.path.write_text(COLLECTIONS.replace(f"users: [{READER}]", f"users: [{STRANGER}]"))
    env.telegram.push_message(STRANGER, QUESTION)
    await reply(env, STRANGER, "Sources:")
    broken = COLLECTIONS.replace(f"users: [{READER}]", "users: [nobody]")
    with caplog.at_level(logging.ERROR, logger="app.bot.access"):
        env.path.write_text(broken)
        answers = len(env.telegram.sent_messages(STRANGER))
        env.telegram.push_message(STRANGER, "and how do I reset my password?")
        await env.telegram.wait_for(
            lambda: [
                m
                for m in env.telegram.sent_messages(STRANGER)[answers:]
                if "Sources:" in (m.plain_text or "")
            ],
            timeout=20,
        )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "previous rules stay in force" in e
        and str(env.path) in e
        and "collections.0.readers.users" in e
        and "'company'" in e
        for e in errors
    ), errors


async def test_sighup_reloads_the_collections_file(tmp_path: Path) -> None:
    path = tmp_path / "collections.yaml"
    path.write_text(COLLECTIONS)
    access = load_collections(path, [], reload_s=3600)
    path.write_text(COLLECTIONS.replace(f"users: [{READER}]", f"users: [{STRANGER}]"))
    assert not [c.name for c in await access.readable(STRANGER, STRANGER, "private")]
    loop = asyncio.get_running_loop()
    access.reload_on_sighup()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
    assert [c.name for c in await access.readable(STRANGER, STRANGER, "private")] == ["company"]


async def test_owner_commands_in_a_group_point_to_the_private_chat(start_bot: StartBot) -> None:
    env = await start_bot()
    env.telegram.push_document(
        OWNER, "group-note.md", b"# Note\n\nShared in the team chat.", chat_id=GROUP,
        chat_type="group",
    )  # fmt: skip
    hint = await reply(env, GROUP, "private chat")
    assert "@kb_test_bot" in (hint.plain_text or "")
    # A file a non-owner shares in the group is not for the bot: no reply, nothing fetched.
    env.telegram.push_document(READER, "photo-list.txt", b"Nothing.", chat_id=GROUP,
                               chat_type="group")  # fmt: skip
    env.telegram.push_message(OWNER, "/docs", chat_id=GROUP, chat_type="group")
    await env.telegram.wait_for(lambda: len(env.telegram.sent_messages(GROUP)) >= 2)
    env.telegram.push_message(OWNER, "/delete group-note.md", chat_id=GROUP, chat_type="group")
    await env.telegram.wait_for(lambda: len(env.telegram.sent_messages(GROUP)) >= 3)
    texts = [m.plain_text or "" for m in env.telegram.sent_messages(GROUP)]
    assert all("private chat" in text for text in texts), texts
    assert not any("group-note.md" in text or "company" in text.lower() for text in texts)
    assert not env.telegram.calls("getFile")
    documents = {d.doc_id for d in await env.store.list_documents("company")}
    assert not {"group-note.md", "photo-list.txt"} & documents


async def test_files_sent_together_all_go_in_after_one_choice(start_bot: StartBot) -> None:
    env = await start_bot(storage=RoundTripStorage())
    names = ["album-1.txt", "album-2.txt", "album-3.txt"]
    for number, name in enumerate(names, 1):
        env.telegram.push_document(MULTI_OWNER, name, f"Album file {number} of 3.".encode())
    question = await reply(env, MULTI_OWNER, "Which knowledge base should 3 file")
    await asyncio.sleep(0.5)
    prompts = [
        m
        for m in env.telegram.sent_messages(MULTI_OWNER)
        if "Which knowledge base" in (m.text or "")
    ]
    assert len(prompts) == 1, [m.text for m in prompts]
    env.telegram.push_callback(MULTI_OWNER, button_data(question)[1], question.message_id)
    report = await reply(env, MULTI_OWNER, "✓")
    assert all(f"{name}: added" in (report.plain_text or "") for name in names)
    assert set(names) <= {d.doc_id for d in await env.store.list_documents("finance")}


async def test_language_mismatch_is_explained_per_file(start_bot: StartBot) -> None:
    # "company" was built for English; the file now says Russian.
    env = await start_bot(
        COLLECTIONS.replace("title: Company handbook", "title: Company handbook\n    language: ru")
    )
    env.telegram.push_document(OWNER, "mismatch.md", b"# Lunch\n\nLunch is at noon.")
    message = await reply(env, OWNER, "mismatch.md")
    text = message.plain_text or ""
    assert "Company handbook" in text
    assert "language: en" in text
    assert " ru" in text
    assert "mismatch.md: not added" in text
    assert "something went wrong" not in text
    # In the owner's language.
    env.telegram.push_document(OWNER, "obed.md", b"# Obed\n\nObed v polden.", language_code="ru")
    russian = await reply(env, OWNER, "obed.md: не добавлен")
    assert "построена для языка en" in (russian.plain_text or "")
    assert not env.telegram.calls("getFile")
