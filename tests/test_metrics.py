"""Watching it run, through HTTP: /metrics filled by a real chain's result hook (outcomes and
step latencies), the LLM router's fallback hook and the rate limiter; /readyz over the real
embedded store, a real redis-server and an OpenAI-compatible server, false when one is down;
and the one JSON log line per question, with its trace id and no secret."""

import io
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from app import logsafe
from app.bot.limits import MemoryRateLimiter
from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult, ResultKind
from app.llm.base import Message
from app.llm.router import FallbackClient
from app.ops.health import Health, checks_for
from app.ops.metrics import CountingLimiter, Metrics
from app.ops.questions import QuestionLog
from app.prompts import PromptStore
from app.settings import ChainSettings, LLMSettings
from app.tracing import Tracer
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.factory import open_store
from kb.search import HybridSearcher
from kb.settings import QdrantSettings, SearchSettings
from tests.conftest import PROMPTS, FileWriter, IngestorFactory, without_env
from tests.fakes.llm import ScriptedLLM
from tests.fakes.openai_server import FakeLLMServer

pytest_plugins = ["tests.fakes.openai_server"]


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample(text: str, name: str) -> float:
    """A sample's value in the exposition text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
async def chain_store(
    tmp_path: Path, make_ingestor: IngestorFactory, write_files: FileWriter
) -> AsyncIterator[EdgeStore]:
    store = EdgeStore(tmp_path / "qdrant")
    docs = write_files(
        tmp_path / "docs",
        {"vpn.md": "# VPN\n\nConnect to the VPN with the Cisco client and your badge number.\n"},
    )
    await make_ingestor(store).ingest(discover([docs]), "company")
    yield store
    await store.close()


def make_chain(
    store: EdgeStore, dense: DenseEmbedder, sparse: SparseEmbedder, llm: ScriptedLLM
) -> Chain:
    return Chain(
        searcher=HybridSearcher(
            store, DenseEmbedders.of(dense), sparse, without_env(SearchSettings)
        ),
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=PromptStore(PROMPTS),
        tracer=Tracer(None),
        settings=without_env(ChainSettings, answer_mode="generate"),
    )


async def test_metrics_over_http_count_outcomes_latencies_fallbacks_and_limits(
    chain_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
) -> None:
    metrics = Metrics()
    chain = make_chain(chain_store, dense_embedder, sparse_embedder, ScriptedLLM())
    chain.result_hooks.append(metrics.observe_result)
    answered = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    failing = make_chain(
        chain_store, dense_embedder, sparse_embedder, ScriptedLLM(fail_steps={"answer"})
    )
    failing.result_hooks.append(metrics.observe_result)
    failed = await failing.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert (answered.kind, failed.kind) == (ResultKind.ANSWER, ResultKind.ERROR)

    # The primary times out: the first request fails over, the second skips it (circuit open).
    router = FallbackClient(
        ScriptedLLM(fail_steps={"unconstrained"}), ScriptedLLM(), failure_threshold=1
    )
    metrics.watch_llm({"answer": router})
    for _ in range(2):
        await router.complete([Message("user", "hi")])
    limiter = CountingLimiter(MemoryRateLimiter(1), metrics)
    assert await limiter.wait_s(5) == 0
    assert await limiter.wait_s(5) > 0

    port = free_port()
    runner = await Health({}, metrics).serve("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            text = await response.text()
    finally:
        await runner.cleanup()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sample(text, 'kb_questions_total{outcome="answer"}') == 1
    assert sample(text, 'kb_questions_total{outcome="error"}') == 1
    assert sample(text, 'kb_questions_total{outcome="not_found"}') == 0
    assert sample(text, 'kb_llm_errors_total{where="chain"}') == 1
    assert sample(text, 'kb_llm_errors_total{where="primary"}') == 1
    assert sample(text, "kb_llm_fallbacks_total") == 2
    assert sample(text, "kb_rate_limited_total") == 1
    # Every step of both runs is a latency sample; the answer step ran in one of them only.
    assert sample(text, 'kb_step_seconds_count{step="retrieve"}') == 2
    assert sample(text, 'kb_step_seconds_count{step="total"}') == 2
    assert sample(text, 'kb_step_seconds_sum{step="total"}') == pytest.approx(
        (answered.timings["total"] + failed.timings["total"]) / 1000
    )
    assert "kb_cache_hits_total 0.0" in text


async def test_readiness_names_the_part_that_is_down(
    tmp_path: Path, redis_url: str, fake_llm_server: FakeLLMServer
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    redis = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    llm_settings = without_env(
        LLMSettings, base_url=fake_llm_server.base_url, model="m", api_key=SecretStr("k-1")
    )
    health = Health(checks_for(store, {}, llm_settings, redis), Metrics(), timeout_s=2)
    port = free_port()
    runner = await health.serve("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            alive = await http.get(f"{url}/healthz")
            ready = await http.get(f"{url}/readyz")
            assert (alive.status, ready.status) == (200, 200)
            assert await ready.json() == {
                "ready": True,
                "checks": {"store": "ok", "llm": "ok", "redis": "ok"},
            }
            models = [r for r in fake_llm_server.requests if r.path == "/v1/models"]
            assert models[-1].headers["authorization"] == "Bearer k-1"

            # Each part down: a Qdrant server and Redis that refuse, the LLM server stopped.
            dead = f"http://127.0.0.1:{free_port()}"
            server = open_store(without_env(QdrantSettings, url=dead, timeout_s=1))
            down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
            health.checks = checks_for(server, {}, llm_settings, down)
            fake_llm_server.stop()
            not_ready = await http.get(f"{url}/readyz")
            body = await not_ready.json()
            await down.aclose()
            await server.close()
    finally:
        await runner.cleanup()
        await redis.aclose()
        await store.close()
    assert not_ready.status == 503
    assert body["ready"] is False
    assert body["checks"]["store"].startswith("failed: ")
    assert body["checks"]["redis"].startswith("failed: ")
    assert body["checks"]["llm"] == "failed: LLMDownError"


def test_one_json_line_per_question_with_its_trace_and_no_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("app.questions")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    root = logging.getLogger("test-metrics-json")
    root.addHandler(handler)
    logsafe.install(["s3cr3t-token-value"], logger=root)
    logsafe.use_json(root)
    result = ChainResult(
        ResultKind.NOT_FOUND,
        "nothing",
        "ab" * 16,
        "my password is s3cr3t-token-value",
        "en",
        timings={"retrieve": 12.5, "total": 830.25},
    )
    try:
        QuestionLog(with_text=False)(result)
        QuestionLog(with_text=True)(result)
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["trace_id"] == "ab" * 16
    assert first["outcome"] == "not_found"
    assert first["latency_ms"] == 830.25
    assert first["steps_ms"] == {"retrieve": 12.5}
    assert first["level"] == "INFO"
    assert first["time"].endswith("+00:00")
    assert "password" not in json.dumps(first), "no question text unless LOG_QUESTIONS is on"
    assert "my password is ***" in second["message"]
    assert "s3cr3t" not in stream.getvalue()
