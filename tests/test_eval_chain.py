"""The eval on the real chain over the sample documents, with a reading LLM (it answers with
the excerpt sentence that shares most words with the question) instead of the slow embedded
one: a run against its own baseline passes; a damaged answer prompt, a document whose fact
was changed, and an unsupported claim each fail the gate and name the items; the judge grades
over HTTP through the fake OpenAI-compatible server."""

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.chain.chain import Chain
from app.eval.command import spread
from app.eval.golden import GoldenItem, read_golden
from app.eval.judge import Judge, JudgeSettings
from app.eval.metrics import ItemResult, summarize
from app.eval.report import regressions, worse_items
from app.eval.runner import Evaluator, eval_chain
from app.eval.text import Stemmer, default_stemmer
from app.prompts import PromptStore, load_prompt_files
from app.settings import ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import ROOT, SAMPLES, IngestorFactory, without_env
from tests.fakes.llm import Call, ScriptedLLM
from tests.fakes.openai_server import FakeLLMServer

pytest_plugins = ["tests.fakes.openai_server"]

GOLDEN = ROOT / "bench" / "golden" / "samples.jsonl"
_WORDS = re.compile(r"[^\W\d_]+|\d+")


def _keys(text: str, stemmer: Stemmer) -> set[str]:
    return stemmer.keys(w for w in _WORDS.findall(text) if not w.isdigit())


def _sentences(user: str) -> list[tuple[int, str]]:
    """The excerpts' sentences with their numbers, from an answer prompt's user message."""
    excerpts = user.split("Excerpts:", 1)[-1].rsplit("Question:", 1)[0]
    found = []
    for number, body in re.findall(
        r"^\[(\d+)\] [^\n]*\n(.*?)(?=^\[\d+\] |\Z)", excerpts, re.M | re.S
    ):
        prose = " ".join(ln for ln in body.splitlines() if not ln.startswith("#"))
        for sentence in re.split(r"(?<=[.!?])\s+", prose):
            if len(sentence.split()) >= 3:
                found.append((int(number), sentence.strip()))
    return found


def read_reply(step: str, system: str, user: str, regex: str | None) -> str:
    """A reading model: the best-matching excerpt sentence, cited, or the refusal; YES when
    an excerpt shares two words with the question; CLEAR; the message as its own query."""
    stemmer = default_stemmer()
    if step == "paraphrase":
        latest = re.search(r"Latest message: (.*)", user)
        return latest.group(1).strip() if latest else user.splitlines()[-1]
    if step == "clarify":
        return "CLEAR"
    question = _keys(user.rsplit("Question:", 1)[-1], stemmer)
    scored = [(len(question & _keys(s, stemmer)), n, s) for n, s in _sentences(user)]
    best = max(scored, default=(0, 0, ""))
    if step == "relevance":
        return "YES" if best[0] >= 2 else "NO"
    refusal = re.search(r"reply exactly: (.*)", system)
    candidates = [f"{best[2]} [{best[1]}]"] if best[0] else []
    for text in [*candidates, refusal.group(1).strip() if refusal else ""]:
        if regex is None or re.fullmatch(regex, text):
            return text
    return ""


def _scripted(call: Call) -> str:
    system = next((m.content for m in call.messages if m.role == "system"), "")
    return read_reply(call.step, system, call.messages[-1].content, call.regex)


def reading_llm() -> ScriptedLLM:
    """The reading model as an in-process client."""
    return ScriptedLLM(replies={s: _scripted for s in ("paraphrase", "relevance", "answer")})


def _chain(store: EdgeStore, dense: DenseEmbedder, sparse: SparseEmbedder, prompts: Path) -> Chain:
    return eval_chain(
        searcher=HybridSearcher(
            store, DenseEmbedders.of(dense), sparse, without_env(SearchSettings)
        ),
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), reading_llm()),
        prompts=PromptStore(load_prompt_files(prompts)),
        tracer=Tracer(None),
        settings=without_env(ChainSettings),
    )


def english_items() -> list[GoldenItem]:
    """English answers and not-founds: the reading model does not ask back."""
    items = [i for i in read_golden(GOLDEN) if i.kind != "clarify" and i.id.startswith("en-")]
    return spread(items, 12, lambda item: item.kind)


async def _run(chain: Chain, items: Sequence[GoldenItem]) -> list[ItemResult]:
    return await Evaluator(chain, progress=False, concurrency=3).run(items)


@pytest.fixture(scope="module")
async def baseline(
    sample_store: EdgeStore, dense_embedder: DenseEmbedder, sparse_embedder: SparseEmbedder
) -> list[ItemResult]:
    """The reading model's run on the samples with the shipped prompts."""
    chain = _chain(sample_store, dense_embedder, sparse_embedder, ROOT / "prompts")
    return await _run(chain, english_items())


def _gate(rows: list[ItemResult], baseline: list[ItemResult]) -> tuple[list[str], list[str]]:
    worse = regressions(summarize(rows), summarize(baseline), 0.05, 2)
    return [w.metric for w in worse], worse_items(rows, {r.id: r for r in baseline})


def test_the_same_chain_meets_its_own_baseline(
    baseline: list[ItemResult],
) -> None:
    summary = summarize(baseline)
    assert summary["items"] == 12
    assert summary["fact_recall"] >= 0.5, [(r.id, r.missing_facts, r.text) for r in baseline]
    assert summary["hit@5"] >= 0.9
    assert summary["tokens"]["completion"] > 0
    assert set(summary["p50_step_ms"]) >= {"paraphrase", "retrieve", "relevance", "answer"}
    assert _gate(baseline, baseline) == ([], [])


async def test_a_damaged_answer_prompt_fails_the_gate(
    tmp_path: Path,
    baseline: list[ItemResult],
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for path in (ROOT / "prompts").glob("*.md"):
        (prompts / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    answer = prompts / "answer.md"
    # The excerpts' text no longer reaches the model: only their titles do.
    answer.write_text(answer.read_text(encoding="utf-8").replace("{{ passage.text }}", ""))
    chain = _chain(sample_store, dense_embedder, sparse_embedder, prompts)
    metrics, items = _gate(await _run(chain, english_items()), baseline)
    assert "fact_recall" in metrics
    assert "outcome_accuracy" in metrics
    assert any(line.startswith("en-annual-leave: outcome answer -> not_found") for line in items)


async def test_a_document_with_a_changed_fact_fails_the_gate(
    tmp_path: Path,
    baseline: list[ItemResult],
    make_ingestor: IngestorFactory,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
) -> None:
    folder = Path(shutil.copytree(SAMPLES / "en", tmp_path / "en"))
    policy = folder / "handbook" / "vacation-policy.md"
    text = policy.read_text(encoding="utf-8").replace("25 working days", "20 working days")
    policy.write_text(text.replace("fourth day", "sixth day"), encoding="utf-8")
    store = EdgeStore(tmp_path / "qdrant")
    try:
        ingestor = make_ingestor(store, chunk_tokens=None, chunk_overlap_tokens=32)
        await ingestor.ingest(discover([folder]), "company")
        chain = _chain(store, dense_embedder, sparse_embedder, ROOT / "prompts")
        metrics, items = _gate(await _run(chain, english_items()), baseline)
    finally:
        await store.close()
    assert metrics == ["fact_recall"]
    assert "en-annual-leave: facts missing: 25 working days" in items


def test_an_unsupported_number_fails_the_gate(baseline: list[ItemResult]) -> None:
    invented = [ItemResult.from_dict(r.to_dict()) for r in baseline]
    invented[0].unsupported, invented[0].unsupported_terms = 3, ["31", "Paris", "Rome"]
    metrics, items = _gate(invented, baseline)
    assert metrics == ["unsupported"]
    assert items == [f"{invented[0].id}: unsupported: 31, Paris, Rome"]


async def test_the_judge_grades_answers_over_http(
    fake_llm_server: FakeLLMServer,
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_llm_server.responder = lambda request: (
        "correct: yes\nfaithful: yes" if "20" not in request.user else "correct: no\nfaithful: no"
    )
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", fake_llm_server.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "judge")
    judge = Judge(JudgeSettings().client(), Tracer(None))
    chain = _chain(sample_store, dense_embedder, sparse_embedder, ROOT / "prompts")
    items = [i for i in english_items() if i.kind == "answer"][:2]
    try:
        rows = await Evaluator(chain, grader=judge, progress=False).run(items)
    finally:
        await judge.llm.aclose()
    assert [(r.judge_correct, r.judge_faithful) for r in rows] == [(1.0, 1.0)] * 2
    assert summarize(rows)["judge_correct"] == 1.0
    # Items are graded concurrently: find the first item's request by its question.
    request = next(r for r in fake_llm_server.chat_requests if items[0].question in r.user)
    # The verdict is constrained like the chain's steps, and sees the question and answer.
    assert request.regex == r"correct: (yes|partly|no)\nfaithful: (yes|no)"
    assert rows[0].text in request.user
