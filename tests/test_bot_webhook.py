"""Webhook mode: the bot registers its URL and secret with the Bot API, answers updates
posted to it, and refuses posts without the secret."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher, serve_webhook
from app.bot.settings import BotSettings
from app.chain.chain import Chain
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, SAMPLES, IngestorFactory, without_env
from tests.fakes.llm import ScriptedLLM
from tests.fakes.telegram_server import FakeTelegramServer

pytest_plugins = ["tests.fakes.telegram_server"]
SECRET = "webhook-secret-4f9a1c"
USER = 7


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def webhook(  # noqa: PLR0917 - pytest passes fixtures by name
    telegram_server: FakeTelegramServer,
    tmp_path: Path,
    make_ingestor: IngestorFactory,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> AsyncIterator[str]:
    """The bot serving its webhook on a local port; yields the URL Telegram would post to."""
    store = EdgeStore(tmp_path / "qdrant")
    ingestor = make_ingestor(store, chunk_tokens=None)
    await ingestor.ingest(discover([SAMPLES / "en"]), "company")
    collections = tmp_path / "collections.yaml"
    collections.write_text("collections:\n  - name: company\n    readers: everyone\n")
    port = free_port()
    settings = without_env(
        BotSettings,
        token=telegram_server.token,
        webhook_url="https://bot.example.com/telegram",
        webhook_secret=SECRET,
        webhook_host="127.0.0.1",
        webhook_port=port,
    )
    chain = Chain(
        searcher=HybridSearcher(
            store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
        ),
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), ScriptedLLM()),
        prompts=PromptStore(PROMPTS),
        tracer=Tracer(None),
        settings=without_env(ChainSettings),
    )
    access = load_collections(collections, [])
    dp = build_dispatcher(BotDeps(chain, access, ingestor, Tracer(None), store, settings))
    bot = telegram_server.new_bot()
    serving = asyncio.create_task(serve_webhook(dp, bot, settings))
    await telegram_server.wait_for_call("setWebhook")
    yield f"http://127.0.0.1:{port}/telegram"
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await bot.session.close()
    await store.close()


def update(text: str) -> dict[str, Any]:
    """A private message update as Telegram posts it."""
    user = {"id": USER, "is_bot": False, "first_name": "U"}
    message = {
        "message_id": 1,
        "date": int(time.time()),
        "chat": {"id": USER, "type": "private", "first_name": "U"},
        "from": user,
        "text": text,
    }
    return {"update_id": 1, "message": message}


async def test_webhook_registers_answers_and_checks_the_secret(
    webhook: str, telegram_server: FakeTelegramServer
) -> None:
    registered = telegram_server.calls("setWebhook")[-1].params
    assert registered["url"] == "https://bot.example.com/telegram"
    assert registered["secret_token"] == SECRET
    telegram_server.add_chat(USER)
    async with aiohttp.ClientSession() as http:
        health = await http.get(webhook.replace("/telegram", "/healthz"))
        assert health.status == 200
        refused = await http.post(
            webhook,
            json=update("How do I connect to the VPN?"),
            headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
        )
        assert refused.status == 401
        accepted = await http.post(
            webhook,
            json=update("How do I connect to the VPN?"),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        assert accepted.status == 200
    answer = await telegram_server.wait_for_message(
        USER, lambda m: "Sources:" in (m.plain_text or ""), timeout=20
    )
    assert "Connecting to the VPN" in (answer.plain_text or "")
    assert len(telegram_server.sent_messages(USER)) == 1
