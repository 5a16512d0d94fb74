"""The composition root as users run it: `python -m app ask` and `python -m app bot` in their
own processes, on an embedded store, against the fake LLM and Bot API servers."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.fakes.openai_server import FakeLLMServer, by_step
from tests.fakes.telegram_server import FakeTelegramServer

pytest_plugins = ["tests.fakes.openai_server", "tests.fakes.telegram_server"]
ROOT = Path(__file__).resolve().parent.parent
REPLIES = {
    "paraphrase": "How do I connect to the VPN?",
    "relevance": "YES",
    "clarify": "CLEAR",
    "answer": "Install the WireGuard client and import your profile [1].",
}


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a process on a store with the samples (ingested by the CLI)."""
    folder = tmp_path_factory.mktemp("cli")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QDRANT_", "LLM_", "LANGFUSE_", "BOT_", "CHAIN_", "EMBEDDING_"))
    }
    env |= {"QDRANT_PATH": str(folder / "qdrant"), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "ingestion", "add", str(SAMPLES / "en"), "--collection", "company"],
        env=env, cwd=folder, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    env["COLLECTIONS_FILE"] = str(folder / "collections.yaml")
    Path(env["COLLECTIONS_FILE"]).write_text(
        "collections:\n  - name: company\n    readers: everyone\n"
    )
    return env


def test_ask_prints_the_result_as_json(
    environment: dict[str, str], fake_llm_server: FakeLLMServer
) -> None:
    fake_llm_server.responder = by_step(REPLIES)
    env = environment | {"LLM_BASE_URL": fake_llm_server.base_url, "LLM_MODEL": "served"}
    done = subprocess.run(
        [sys.executable, "-m", "app", "ask", "How do I connect to the VPN?",
         "--collection", "company", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "answer"
    assert result["text"] == REPLIES["answer"]
    assert result["sources"][0]["doc_id"] == "it/vpn.md"
    assert all(r.regex for r in fake_llm_server.chat_requests)


def test_ask_with_the_llm_down_exits_1_with_sources(environment: dict[str, str]) -> None:
    env = environment | {
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_MODEL": "served",
        "LLM_RETRIES": "0",
        # An earlier test of this module answered the same question: not from the cache.
        "CACHE_MODE": "off",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "ask", "How do I connect to the VPN?",
         "--collection", "company"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "language model is unavailable" in done.stdout
    assert "Connecting to the VPN" in done.stdout
    assert "Traceback" not in done.stderr


async def test_bot_process_answers_and_stops_cleanly(
    environment: dict[str, str],
    fake_llm_server: FakeLLMServer,
    telegram_server: FakeTelegramServer,
) -> None:
    fake_llm_server.responder = by_step(REPLIES)
    env = environment | {
        "LLM_BASE_URL": fake_llm_server.base_url,
        "LLM_MODEL": "served",
        "BOT_TOKEN": telegram_server.token,
        "TELEGRAM_API_URL": telegram_server.base_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        await telegram_server.wait_for_poll(timeout=120)
        assert telegram_server.commands, "the bot registers its commands"
        telegram_server.push_message(42, "How do I connect to the VPN?")
        answer = await telegram_server.wait_for_message(
            42, lambda m: "Sources:" in (m.plain_text or ""), timeout=60
        )
        assert "Connecting to the VPN" in (answer.plain_text or "")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = err.decode()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
