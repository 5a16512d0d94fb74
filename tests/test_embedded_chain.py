"""The real prompts on the real embedded model: every step's output matches the regex its
prompt file declares (the chain on llama.cpp, as the quickstart runs it); answers quote the
documents, in the question's language; the verdicts tell answerable questions from others."""

import re
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from app.chain.chain import Chain
from app.chain.relevance import RelevanceJudge
from app.chain.retrieve import CHARS_PER_TOKEN, Retriever, assemble, select
from app.chain.types import ENGLISH, RUSSIAN, ChainRequest, Language, ResultKind, Turn
from app.chain.variables import prompt_variables
from app.llm.llamacpp import LlamaCppClient
from app.prompts import PromptStore
from app.settings import ChainSettings, LLMSettings
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, ROOT, without_env

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
    return HybridSearcher(
        sample_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
    )


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
    for step in ("paraphrase", "relevance", "clarify", "answer", "answer_quote"):
        prompt = PROMPTS[step].render(**variables)
        # The answer's own limit is 512 tokens; 160 keeps the test short on 2 cores.
        params = replace(prompt.params, max_tokens=min(prompt.params.max_tokens, 160))
        completion = await llm.complete(prompt.messages, regex=prompt.regex, params=params)
        if completion.finish_reason == "length":
            # Cut by max_tokens: still never outside the shape (a valid prefix).
            assert completion.usage.completion_tokens == params.max_tokens
        else:
            assert re.fullmatch(prompt.regex, completion.text), (step, completion.text)


def embedded_chain(llm: LlamaCppClient, searcher: HybridSearcher, store: EdgeStore) -> Chain:
    """The chain on the embedded model, with the default settings (quote mode)."""
    return Chain(
        searcher=searcher,
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=PromptStore(PROMPTS),
        tracer=Tracer(None),
        settings=without_env(ChainSettings, context_tokens=600),
    )


def assert_quoted(text: str, document: str) -> None:
    """Every line of a quote-mode answer is a sentence of the document with a citation,
    and none is said twice."""
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3
    assert len(set(lines)) == len(lines)
    flat = " ".join((ROOT / "samples" / document).read_text(encoding="utf-8").split())
    for line in lines:
        sentence, citation = line.rsplit(" ", 1)
        assert re.fullmatch(r"\[\d+\]", citation), line
        assert sentence in flat, line


async def test_chain_on_the_embedded_model(
    llm: LlamaCppClient, searcher: HybridSearcher, sample_store: EdgeStore
) -> None:
    chain = embedded_chain(llm, searcher, sample_store)
    result = await chain.run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind in {ResultKind.ANSWER, ResultKind.CLARIFY, ResultKind.NOT_FOUND}
    assert result.timings["llm"] > 0
    if result.kind is ResultKind.ANSWER:
        assert result.sources
        assert re.search(r"\[\d+\]", result.text)


async def test_russian_question_is_answered_with_a_sentence_of_the_policy(
    llm: LlamaCppClient, searcher: HybridSearcher, sample_store: EdgeStore
) -> None:
    chain = embedded_chain(llm, searcher, sample_store)
    # "Сколько дней отпуска положено?" is closer to the 5 days of unpaid family leave.
    question = "Сколько дней ежегодного отпуска положено?"
    result = await chain.run(ChainRequest(question, ["company-ru"]))
    assert (result.kind, result.language) == (ResultKind.ANSWER, "ru"), result.text
    assert "28 календарных дней" in result.text.splitlines()[0]
    assert_quoted(result.text, "ru/hr/otpusk.md")
    assert result.sources[0].doc_id == "hr/otpusk.md"


async def test_english_question_naming_a_russian_product_is_answered_in_english(
    llm: LlamaCppClient, searcher: HybridSearcher, sample_store: EdgeStore
) -> None:
    chain = embedded_chain(llm, searcher, sample_store)
    question = "The VPN connects, but internal sites like Бухгалтерия do not load. Why?"
    result = await chain.run(ChainRequest(question, ["company"]))
    assert (result.kind, result.language) == (ResultKind.ANSWER, "en"), result.text
    assert "10.0.0.53" in result.text
    assert_quoted(result.text, "en/it/vpn.md")


@pytest.mark.parametrize(
    ("question", "relevant"),
    [
        ("How many days of paid annual leave do full-time employees get?", True),
        ("Is there free parking for employees at the office?", False),
    ],
)
async def test_verdict_tells_answerable_questions_from_off_topic_ones(
    llm: LlamaCppClient,
    searcher: HybridSearcher,
    sample_store: EdgeStore,
    question: str,
    relevant: bool,
) -> None:
    settings = without_env(ChainSettings)
    passages = await Retriever(searcher, sample_store, Tracer(None), settings)(
        question, ["company"]
    )
    # The best hit is above the score shortcut: the LLM decides, not the score.
    assert passages[0].score >= settings.min_score
    judge = RelevanceJudge(llm, PromptStore(PROMPTS), Tracer(None), settings)
    verdict = await judge(question, passages, ENGLISH)
    assert verdict.relevant is relevant, verdict.reason
    assert set(verdict.gains) == {p.n for p in passages}
