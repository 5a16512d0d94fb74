"""The chain on real retrieval (Qdrant Edge, the real embedders, the sample documents) with a
scripted in-process LLM: which steps run, what they are given, what comes out."""

import re
from typing import Any

import pytest

from app.chain.chain import Chain
from app.chain.clarify import Clarification, by_gains
from app.chain.quote import sentences
from app.chain.retrieve import _merge, _overlap, assemble, select
from app.chain.types import ENGLISH, RUSSIAN, ChainRequest, Passage, ResultKind, Turn
from app.chain.variables import prompt_variables
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer, trace_id_for
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.schema import Chunk, ScoredChunk
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, without_env
from tests.fakes.llm import Call, ScriptedLLM


def make_chain(
    store: EdgeStore,
    dense: DenseEmbedder,
    sparse: SparseEmbedder,
    search: SearchSettings,
    llm: ScriptedLLM,
    **settings: Any,
) -> Chain:
    """A chain on the sample store with one scripted LLM for every step."""
    return Chain(
        searcher=HybridSearcher(store, DenseEmbedders.of(dense), sparse, search),
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=PromptStore(PROMPTS),
        tracer=Tracer(None),
        settings=without_env(ChainSettings, **settings),
    )


@pytest.fixture
def chain_for(
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> Any:
    """Build a chain around a given scripted LLM."""

    def build(llm: ScriptedLLM, **settings: Any) -> Chain:
        return make_chain(
            sample_store, dense_embedder, sparse_embedder, search_settings, llm, **settings
        )

    return build


async def test_answer_cites_only_retrieved_passages(chain_for: Any) -> None:
    llm = ScriptedLLM()
    result = await chain_for(llm).run(
        ChainRequest("How many vacation days do I get?", ["company"], run_key="chat1:msg1")
    )
    assert result.kind is ResultKind.ANSWER
    assert result.trace_id == trace_id_for("chat1:msg1")
    # No history: no paraphrase call; relevance and clarify run, then the answer.
    assert sorted(llm.steps()) == ["answer", "clarify", "relevance"]
    answer_call = next(c for c in llm.calls if c.step == "answer")
    prompt = answer_call.messages[-1].content
    numbers = re.findall(r"^\[(\d+)\] ", prompt, re.MULTILINE)
    assert numbers
    assert numbers[0] == "1"
    # The citation alternatives of the regex are exactly the passages' numbers.
    assert answer_call.regex is not None
    assert f"\\[({'|'.join(numbers)})\\]" in answer_call.regex
    assert re.fullmatch(answer_call.regex, "Yes [1].")
    assert not re.fullmatch(answer_call.regex, f"Yes [{len(numbers) + 1}].")
    assert "25 working days" in prompt
    assert result.sources[0].doc_id == "handbook/vacation-policy.md"
    assert result.sources[0].n == 1
    assert set(result.timings) >= {"relevance", "clarify", "answer", "retrieve", "llm", "total"}


async def test_follow_up_is_paraphrased_with_history(chain_for: Any) -> None:
    llm = ScriptedLLM(replies={"paraphrase": "How do I set up the company VPN on Debian?"})
    history = [
        Turn("user", "What is the company VPN?"),
        Turn("assistant", "It gives access to internal systems [1]."),
    ]
    result = await chain_for(llm).run(
        ChainRequest("and how do I set it up on Debian?", ["company"], history=history)
    )
    assert llm.steps()[0] == "paraphrase"
    paraphrase = llm.calls[0].messages[-1].content
    assert "What is the company VPN?" in paraphrase
    assert "Latest message: and how do I set it up on Debian?" in paraphrase
    assert result.query == "How do I set up the company VPN on Debian?"
    assert result.sources[0].doc_id == "it/vpn.md"


async def test_history_is_limited_to_the_last_turns(chain_for: Any) -> None:
    llm = ScriptedLLM()
    history = [Turn("user", f"old question {i}") for i in range(10)]
    await chain_for(llm, history_turns=2).run(
        ChainRequest("and the VPN?", ["company"], history=history)
    )
    prompt = llm.calls[0].messages[-1].content
    assert "old question 9" in prompt
    assert "old question 8" in prompt
    assert "old question 5" not in prompt


async def test_irrelevant_context_gives_not_found_without_answer(chain_for: Any) -> None:
    llm = ScriptedLLM(replies={"relevance": "NO"})
    result = await chain_for(llm).run(ChainRequest("How do I reset my password?", ["company"]))
    assert result.kind is ResultKind.NOT_FOUND
    assert "could not find" in result.text
    assert "answer" not in llm.steps()
    assert result.sources == []


async def test_weak_hits_are_not_found_without_asking_the_llm(chain_for: Any) -> None:
    llm = ScriptedLLM()
    result = await chain_for(llm, min_score=0.99).run(
        ChainRequest("What is the airspeed of an unladen swallow?", ["company"])
    )
    assert result.kind is ResultKind.NOT_FOUND
    assert "relevance" not in llm.steps()
    assert "answer" not in llm.steps()


async def test_clarifying_question_then_the_chosen_option(chain_for: Any) -> None:
    llm = ScriptedLLM(
        replies={"clarify": "ASK: Which kind of leave do you mean?\n- Annual leave\n- Sick leave"}
    )
    chain = chain_for(llm)
    first = await chain.run(ChainRequest("How much leave can I take?", ["company"]))
    assert first.kind is ResultKind.CLARIFY
    assert first.text == "Which kind of leave do you mean?"
    assert first.options == ["Annual leave", "Sick leave"]
    assert first.sources == []
    # Options can only be sections that were retrieved.
    regex = next(c.regex for c in llm.calls if c.step == "clarify")
    assert regex is not None
    assert re.fullmatch(regex, "ASK: Which one?\n- Annual leave\n- Sick leave")
    assert not re.fullmatch(regex, "ASK: Which one?\n- Berlin\n- London")
    llm.calls.clear()
    second = await chain.run(
        ChainRequest("How much leave can I take?", ["company"], clarification="Sick leave")
    )
    assert second.kind is ResultKind.ANSWER
    assert "clarify" not in llm.steps()
    assert second.query == "How much leave can I take? (Sick leave)"


async def test_embedded_llm_runs_clarify_only_when_relevant(chain_for: Any) -> None:
    serial = ScriptedLLM(replies={"relevance": "NO"}, concurrent=False)
    await chain_for(serial).run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert serial.steps() == ["relevance"]


async def test_llm_failure_is_an_error_result_with_sources(chain_for: Any) -> None:
    llm = ScriptedLLM(fail_steps={"answer"})
    result = await chain_for(llm).run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind is ResultKind.ERROR
    assert "language model is unavailable" in result.text
    assert result.error is not None
    assert "LLMTimeoutError" in result.error
    assert result.sources
    assert result.sources[0].doc_id == "it/vpn.md"


async def test_missing_collection_is_an_error_result(chain_for: Any) -> None:
    result = await chain_for(ScriptedLLM()).run(ChainRequest("VPN?", ["nope"]))
    assert result.kind is ResultKind.ERROR
    assert "knowledge base is unavailable" in result.text


async def test_russian_question_gets_russian_prompts_and_alphabet(chain_for: Any) -> None:
    def russian(call: Call) -> str:
        return "Да, [1]." if call.regex and re.fullmatch(call.regex, "Да, [1].") else "x"

    llm = ScriptedLLM(replies={"answer": russian})
    result = await chain_for(llm).run(ChainRequest("Как подключиться к VPN?", ["company"]))
    assert result.language == "ru"
    answer_call = next(c for c in llm.calls if c.step == "answer")
    assert "Answer in Russian" in answer_call.messages[0].content
    assert result.text == "Да, [1]."


async def test_streamed_answer_reaches_the_caller(chain_for: Any) -> None:
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    result = await chain_for(ScriptedLLM()).run(
        ChainRequest("How do I connect to the VPN?", ["company"], on_delta=on_delta)
    )
    assert "".join(pieces) == result.text


async def test_a_refusal_is_not_found_without_sources(chain_for: Any) -> None:
    llm = ScriptedLLM(replies={"answer": "The knowledge base does not say."})
    result = await chain_for(llm).run(ChainRequest("How do I connect to the VPN?", ["company"]))
    assert result.kind is ResultKind.NOT_FOUND
    assert "could not find" in result.text
    assert result.sources == []
    regex = next(c.regex for c in llm.calls if c.step == "answer")
    assert regex is not None
    assert re.fullmatch(regex, "The knowledge base does not say.")


async def test_quote_mode_answers_with_sentences_of_the_passages(chain_for: Any) -> None:
    def quote(call: Call) -> str:
        # The first sentence of the prompt that the regex lets it quote as excerpt 1's.
        found = (f"{s} [1]" for s in sentences(call.messages[-1].content))
        return next(q for q in found if call.regex and re.fullmatch(call.regex, q))

    llm = ScriptedLLM(replies={"answer": quote}, concurrent=False)
    chain = chain_for(llm, answer_mode="auto")
    result = await chain.run(ChainRequest("How many vacation days do I get?", ["company"]))
    call = next(c for c in llm.calls if c.step == "answer")
    assert "by quoting the company knowledge base word for word" in call.messages[0].content
    assert result.kind is ResultKind.ANSWER, result.text
    assert result.text.endswith(" [1]")
    assert result.sources[0].doc_id == "handbook/vacation-policy.md"
    assert call.regex is not None
    assert not re.fullmatch(call.regex, "Every employee gets 30 days of leave. [1]")


def test_english_alphabet_has_no_cyrillic() -> None:
    variables = prompt_variables(query="q", language=ENGLISH) | {"citations": "1"}
    prompt = PROMPTS["answer"].render(**variables)
    assert re.fullmatch(prompt.regex, "Fine [1].")
    assert not re.fullmatch(prompt.regex, "Fine Да [1].")
    assert not re.fullmatch(prompt.regex, "No citation at all.")


def _chunk(index: int, text: str, doc: str = "d.md", score: float = 0.5) -> ScoredChunk:
    from datetime import UTC, datetime

    chunk = Chunk(doc, "c", "Doc", ("Doc", "Part"), index, 5, text, "h", datetime.now(UTC), doc)
    return ScoredChunk(chunk, score)


def test_adjacent_chunks_merge_without_their_overlap() -> None:
    a = _chunk(1, "First sentence. Shared tail sentence.")
    b = _chunk(2, "Shared tail sentence.\n\nNext part.")
    assert _overlap(a.chunk.text, b.chunk.text) == len("Shared tail sentence.")
    merged = _merge([a.chunk, b.chunk])
    assert merged.count("Shared tail sentence.") == 1
    assert merged.endswith("Next part.")
    gap = _merge([a.chunk, _chunk(4, "Far away.").chunk])
    assert "…" in gap


def test_context_budget_and_duplicates() -> None:
    hits = [_chunk(0, "x" * 300, score=0.9), _chunk(1, "x" * 300, doc="e.md", score=0.8)]
    hits.append(_chunk(2, "y" * 300, score=0.7))
    chosen = select(hits, budget_chars=700)
    assert [h.chunk.chunk_index for h in chosen] == [0, 2]
    too_big = select([_chunk(0, "z" * 1000)], budget_chars=100)
    assert len(too_big[0].chunk.text) == 100
    passages = assemble([*chosen, _chunk(3, "other doc", doc="f.md", score=0.95)])
    assert [p.doc_id for p in passages] == ["f.md", "d.md"]
    assert [p.n for p in passages] == [1, 2]


def _passage(n: int, title: str, score: float) -> Passage:
    return Passage(n, "company", f"{n}.md", title, "Text.", f"{n}.md", score)


def test_embedded_clarification_needs_two_documents_close_by_both_signals() -> None:
    leave, travel = _passage(1, "Leave policy", 0.60), _passage(2, "Travel policy", 0.55)
    asked, why = by_gains([leave, travel], {1: 1.2, 2: 1.0}, ENGLISH, 0.6, 0.4)
    assert asked.question == "Which of these do you mean?"
    assert asked.options == ["Leave policy", "Travel policy"]
    assert "2 documents" in why
    russian, _ = by_gains([leave, travel], {1: 1.2, 2: 1.0}, RUSSIAN, 0.6, 0.4)
    assert russian.question == "Что из этого вы имеете в виду?"
    # Search ranks the second far below; its gain is below the minimum; or far below the best.
    far = _passage(2, "Travel policy", 0.28)
    for passages, gains in (
        ([leave, far], {1: 0.69, 2: 0.62}),
        ([leave, travel], {1: 1.2, 2: 0.5}),
        ([leave, travel], {1: 1.6, 2: 1.0}),
    ):
        assert by_gains(passages, gains, ENGLISH, 0.6, 0.4) == (
            Clarification(None),
            "one document dominates",
        )
