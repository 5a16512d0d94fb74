"""The chain over real HTTP: the OpenAI-compatible clients that build_llm_clients makes, talking
to the fake server; what every step's request carries, timeouts and fallback."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.chain.chain import Chain
from app.chain.types import ChainRequest, ResultKind, Turn
from app.llm.base import LLMClient
from app.llm.router import aclose_all, build_llm_clients
from app.prompts import PromptStore
from app.settings import ChainSettings, LLMSettings
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, without_env
from tests.fakes.llm import step_of
from tests.fakes.openai_server import FakeLLMServer, ServerFactory, by_regex, by_step

pytest_plugins = ["tests.fakes.openai_server"]

REPLIES = {
    "paraphrase": "How do I set up the company VPN on Debian?",
    "relevance": "YES",
    "clarify": "CLEAR",
    "answer": "Install the WireGuard client [1].",
}
HISTORY = (Turn("user", "What is the VPN?"), Turn("assistant", "It reaches internal systems [1]."))


@pytest.fixture
def llm_server(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    """The fake server answering per step."""
    fake_llm_server.responder = by_step(REPLIES)
    return fake_llm_server


@pytest.fixture
async def build_chain(
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> AsyncIterator[Any]:
    """A chain whose LLM clients come from LLMSettings, as in production."""
    made: list[dict[str, LLMClient]] = []

    def build(answer_mode: str = "auto", **llm: Any) -> Chain:
        clients = build_llm_clients(without_env(LLMSettings, **llm), embedded=_no_embedded)
        made.append(clients)
        return Chain(
            searcher=HybridSearcher(
                sample_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
            ),
            store=sample_store,
            llm=clients,
            prompts=PromptStore(PROMPTS),
            tracer=Tracer(None),
            settings=without_env(ChainSettings, answer_mode=answer_mode),
        )

    yield build
    for clients in made:
        await aclose_all(clients)


def _no_embedded() -> LLMClient:
    raise AssertionError("a server is configured; the embedded model must not be built")


def _guided_keys(body: Any) -> list[str]:
    if isinstance(body, dict):
        own = [k for k in body if k.startswith("guided")]
        return own + [k for v in body.values() for k in _guided_keys(v)]
    if isinstance(body, list):
        return [k for v in body for k in _guided_keys(v)]
    return []


async def test_every_step_sends_its_regex_as_structured_outputs(
    llm_server: FakeLLMServer, build_chain: Any
) -> None:
    chain = build_chain(base_url=llm_server.base_url, model="served-model")
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    result = await chain.run(
        ChainRequest("and on Debian?", ["company"], history=HISTORY, on_delta=on_delta)
    )
    assert result.kind is ResultKind.ANSWER
    assert result.text == REPLIES["answer"]
    assert "".join(pieces) == result.text
    requests = llm_server.chat_requests
    steps = sorted(step_of(r.body["structured_outputs"]["regex"]) for r in requests)
    assert steps == ["answer", "clarify", "paraphrase", "relevance"]
    for request in requests:
        assert request.body["model"] == "served-model"
        assert isinstance(request.body["structured_outputs"]["regex"], str)
        assert _guided_keys(request.body) == []
    answer = next(r for r in requests if "Excerpts" in str(r.messages) and r.body.get("stream"))
    assert answer.body["structured_outputs"]["regex"].count("\\[(") >= 2
    assert llm_server.regex_violations == []


async def test_a_refusal_from_the_server_is_not_found_without_sources(
    llm_server: FakeLLMServer, build_chain: Any
) -> None:
    llm_server.responder = by_step(REPLIES | {"answer": "The knowledge base does not say."})
    chain = build_chain(base_url=llm_server.base_url, model="served-model")
    result = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind is ResultKind.NOT_FOUND
    assert result.sources == []
    assert llm_server.regex_violations == []


async def test_quote_mode_on_a_server_sends_the_quote_regex_unchanged(
    llm_server: FakeLLMServer, build_chain: Any
) -> None:
    quote = "Import the file into the WireGuard client and activate the tunnel. [1]"
    llm_server.responder = by_regex("YES", "CLEAR", quote)
    chain = build_chain(answer_mode="quote", base_url=llm_server.base_url, model="m")
    result = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert (result.kind, result.text) == (ResultKind.ANSWER, quote)
    assert result.sources[0].doc_id == "it/vpn.md"
    answer = next(r for r in llm_server.chat_requests if "word for word" in str(r.messages))
    regex = answer.body["structured_outputs"]["regex"]
    # The quote regex as the prompt renders it: the refusal, then every run of sentences.
    assert regex.startswith("The knowledge base does not say\\.|")
    assert "Install the WireGuard client from the software center" in regex
    assert llm_server.regex_violations == []


async def test_llm_timeout_is_a_clear_error_result(
    llm_server: FakeLLMServer, build_chain: Any
) -> None:
    llm_server.delay_s = 2.0
    chain = build_chain(
        base_url=llm_server.base_url, model="m", timeout_s=0.3, retries=1, backoff_s=0.01
    )
    result = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind is ResultKind.ERROR
    assert "language model is unavailable" in result.text
    assert result.error is not None
    assert "LLMTimeoutError" in result.error
    # Retrieval worked: the documents found are offered.
    assert result.sources[0].doc_id == "it/vpn.md"
    # Relevance and clarify ran side by side, each tried twice; nothing else was asked.
    assert len(llm_server.chat_requests) == 4


async def test_fallback_answers_when_the_primary_keeps_failing(
    llm_server: FakeLLMServer, make_fake_llm_server: ServerFactory, build_chain: Any
) -> None:
    fallback = make_fake_llm_server()
    fallback.responder = by_step(REPLIES)
    llm_server.fail_next(503, times=100)
    chain = build_chain(
        base_url=llm_server.base_url,
        model="m",
        retries=1,
        backoff_s=0.01,
        fallback_base_url=fallback.base_url,
        fallback_model="backup",
    )
    result = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind is ResultKind.ANSWER
    assert {r.body["model"] for r in fallback.chat_requests} == {"backup"}
    assert len(fallback.chat_requests) == 3
