"""The bot waits for its LLM server at start (vLLM loading a model answers nothing, then
errors, then lists its models): real HTTP against the fake OpenAI-compatible server."""

import logging
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.bot.access import load_collections
from app.bot.app import make_redis
from app.bot.settings import BotSettings
from app.bot.startup import LLMStartError, wait_for_llm
from app.settings import LLMSettings
from tests.conftest import without_env
from tests.fakes.openai_server import FakeLLMServer

pytest_plugins = ["tests.fakes.openai_server"]


def _bot(wait_s: float = 5.0) -> BotSettings:
    return without_env(BotSettings, start_retry_s=0.05, start_retry_max_s=0.1, llm_wait_s=wait_s)


def _llm(base_url: str, model: str = "fake-model", key: str = "k" * 32) -> LLMSettings:
    return without_env(
        LLMSettings, base_url=base_url, model=model, api_key=SecretStr(key), connect_timeout_s=1
    )


async def test_waits_until_the_server_lists_its_models(
    fake_llm_server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm_server.fail_next(503, times=2, message="loading")
    with caplog.at_level(logging.WARNING, logger="app.bot.startup"):
        ready = await wait_for_llm(_llm(fake_llm_server.base_url), _bot())
    assert ready
    gets = [r for r in fake_llm_server.requests if r.method == "GET"]
    assert [r.path for r in gets] == ["/v1/models"] * 3
    assert all(r.headers["authorization"] == "Bearer " + "k" * 32 for r in gets)
    retries = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
    assert len(retries) == 2
    assert "HTTP 503" in retries[0]
    assert "k" * 32 not in caplog.text


async def test_gives_up_after_the_wait_and_starts_anyway(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="app.bot.startup"):
        ready = await wait_for_llm(_llm(f"http://127.0.0.1:{port}/v1"), _bot(wait_s=0.3))
    assert not ready
    assert "starting anyway" in caplog.records[-1].getMessage()
    assert len(caplog.records) >= 2, "it retried before giving up"


async def test_a_refused_key_stops_the_start(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_next(401, message="bad key")
    with pytest.raises(LLMStartError, match="LLM_API_KEY"):
        await wait_for_llm(_llm(fake_llm_server.base_url), _bot())
    assert len(fake_llm_server.requests) == 1, "a wrong key is not retried"


async def test_a_model_the_server_does_not_serve_is_named(
    fake_llm_server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.bot.startup"):
        assert await wait_for_llm(_llm(fake_llm_server.base_url, model="qwen-typo"), _bot())
    assert "LLM_MODEL 'qwen-typo' is not among the served models ['fake-model']" in caplog.text


async def test_no_wait_without_a_server_or_when_turned_off(
    fake_llm_server: FakeLLMServer,
) -> None:
    assert not await wait_for_llm(without_env(LLMSettings), _bot())
    assert not await wait_for_llm(_llm(fake_llm_server.base_url), _bot(wait_s=0))
    assert fake_llm_server.requests == []


def test_a_collection_readable_by_everyone_is_warned_of_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "collections.yaml"
    path.write_text(
        "collections:\n"
        "  - name: handbook\n    readers: {members_of: [-1001234567890]}\n"
        "  - name: lunch-menu\n    readers: everyone\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="app.bot.access"):
        access = load_collections(path, admins=[])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'lunch-menu' readable by everyone" in warnings[0]
    assert "handbook" not in warnings[0]
    # The rule stays as written: the warning informs, it does not change who reads.
    assert access.collections["lunch-menu"].readers.everyone

    caplog.clear()
    path.write_text("collections:\n  - name: handbook\n    readers: nobody\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="app.bot.access"):
        assert access.reload()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_the_sample_collections_file_is_for_employees_only() -> None:
    sample = Path(__file__).resolve().parent.parent / "config" / "collections.example.yaml"
    access = load_collections(sample, admins=[])
    assert access.collections, "the sample declares collections"
    for config in access.collections.values():
        assert not config.readers.everyone, f"{config.name} is readable by everyone"
        assert config.readers.members_of, f"{config.name} is not for a group's members"


async def test_the_bot_authenticates_to_a_redis_with_a_password(redis_url: str) -> None:
    password = "p" * 64
    admin = Redis.from_url(redis_url)
    await admin.config_set("requirepass", password)
    await admin.aclose()

    without = make_redis(without_env(BotSettings, redis_url=redis_url))
    assert without is not None
    with pytest.raises(RedisError):  # NOAUTH, or the server closing the connection
        await without.set("k", "v")
    await without.aclose()

    with_password = make_redis(
        without_env(BotSettings, redis_url=redis_url, redis_password=SecretStr(password))
    )
    assert with_password is not None
    assert await with_password.set("k", "v")
    await with_password.aclose()

    # A password inside REDIS_URL wins over BOT_REDIS_PASSWORD (an external Redis).
    in_url = redis_url.replace("redis://", f"redis://:{password}@")
    external = make_redis(
        without_env(BotSettings, redis_url=in_url, redis_password=SecretStr("w" * 64))
    )
    assert external is not None
    assert await external.get("k") == b"v"
    await external.aclose()


def test_a_placeholder_redis_password_is_refused() -> None:
    with pytest.raises(ValueError, match="BOT_REDIS_PASSWORD"):
        without_env(BotSettings, redis_password=SecretStr("change-me"))
