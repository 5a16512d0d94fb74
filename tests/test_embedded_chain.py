"""The real prompts on the real embedded model: every step's output matches the regex its
prompt file declares (the chain on llama.cpp, as the quickstart runs it)."""

import re
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from app.chain.chain import Chain
from app.chain.retrieve import CHARS_PER_TOKEN, assemble, select
from app.chain.types import ENGLISH, RUSSIAN, ChainRequest, Language, ResultKind, Turn
from app.chain.variables import prompt_variables
from app.llm.llamacpp import LlamaCppClient
from app.prompts import PromptStore
from app.settings import ChainSettings, LLMSettings
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, without_env

HISTORY = [Turn("user", "How do I set up the VPN?"), Turn("assistant", "Install WireGuard [1].")]


@pytest.fixture(scope="module")
async def llm() -> AsyncIterator[LlamaCppClient]:
    """The bundled Gemma 3 270M, loaded once."""
    client = await LlamaCppClient.create(without_env(LLMSettings, n_ctx=4096))
    yield client
    await client.aclose()


@pytest.fixture
def searcher(
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> HybridSearcher:
    """Hybrid search over the samples."""
    return HybridSearcher(sample_store, dense_embedder, sparse_embedder, search_settings)


@pytest.mark.parametrize(
    ("question", "language"),
    [("what if the handshake never completes?", ENGLISH), ("Как подключиться к VPN?", RUSSIAN)],
)
async def test_every_step_output_matches_its_regex(
    llm: LlamaCppClient, searcher: HybridSearcher, question: str, language: Language
) -> None:
    hits = await searcher.search("VPN handshake", ["company"], limit=4)
    passages = assemble(select(hits, 600 * CHARS_PER_TOKEN))
    variables = prompt_variables(
        query=question, language=language, passages=passages, history=HISTORY
    )
    for step in ("paraphrase", "relevance", "clarify", "answer"):
        prompt = PROMPTS[step].render(**variables)
        # The answer's own limit is 512 tokens; 160 keeps the test short on 2 cores.
        params = replace(prompt.params, max_tokens=min(prompt.params.max_tokens, 160))
        completion = await llm.complete(prompt.messages, regex=prompt.regex, params=params)
        if completion.finish_reason == "length":
            # Cut by max_tokens: still never outside the shape (a valid prefix).
            assert completion.usage.completion_tokens == params.max_tokens
        else:
            assert re.fullmatch(prompt.regex, completion.text), (step, completion.text)


async def test_chain_on_the_embedded_model(
    llm: LlamaCppClient, searcher: HybridSearcher, sample_store: EdgeStore
) -> None:
    chain = Chain(
        searcher=searcher,
        store=sample_store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=PromptStore(PROMPTS),
        tracer=Tracer(None),
        settings=without_env(ChainSettings, context_tokens=600),
    )
    result = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind in {ResultKind.ANSWER, ResultKind.CLARIFY, ResultKind.NOT_FOUND}
    assert result.timings["llm"] > 0
    if result.kind is ResultKind.ANSWER:
        assert result.sources
        assert re.search(r"\[\d+\]", result.text)
