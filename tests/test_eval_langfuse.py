"""The eval with Langfuse, through the real SDK and the local receiver: the golden set becomes
a dataset (items upserted by id, read back as the same items), and a run is an experiment on
it whose items carry the metrics as scores, with the summary as run scores."""

import time
from collections.abc import Callable

from app.eval.golden import (
    dataset_item_id,
    dataset_items,
    from_dataset_item,
    upsert_dataset,
)
from app.eval.runner import Evaluator, eval_chain
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, without_env
from tests.fakes.langfuse_server import ExportedSpan, FakeLangfuse, LangfuseFactory
from tests.test_eval_chain import english_items, reading_llm

pytest_plugins = ["tests.fakes.langfuse_server"]


def _wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def test_a_run_is_an_experiment_on_the_golden_dataset(
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
) -> None:
    langfuse = make_langfuse()
    items = english_items()[:4]
    upsert_dataset(langfuse, "samples", items)
    # Upserted by id: a second upload changes nothing.
    upsert_dataset(langfuse, "samples", items)
    stored = langfuse_server.dataset_items("samples")
    assert [i["id"] for i in stored] == [dataset_item_id("samples", i.id) for i in items]
    found = dataset_items(langfuse, "samples")
    assert [from_dataset_item(i) for i in found] == items

    tracer = Tracer(langfuse)
    chain = eval_chain(
        searcher=HybridSearcher(
            sample_store, DenseEmbedders.of(dense_embedder), sparse_embedder,
            without_env(SearchSettings),
        ),
        store=sample_store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), reading_llm()),
        prompts=PromptStore(PROMPTS),
        tracer=tracer,
        settings=without_env(ChainSettings),
    )  # fmt: skip
    rows = await Evaluator(chain, progress=False).run_experiment(langfuse, "samples", found)
    assert [r.id for r in rows] == [i.id for i in items]
    tracer.flush()

    scores = langfuse_server.scores()
    item_scores = [s for s in scores if s.get("traceId")]
    run_scores = {s["name"]: s["value"] for s in scores if s.get("datasetRunId")}
    assert {s["name"] for s in item_scores} >= {"outcome", "hit@5", "fact_recall"}
    assert len({s["traceId"] for s in item_scores}) == len(items)
    assert set(run_scores) >= {"outcome_accuracy", "fact_recall", "hit@5", "mrr@10", "p50_ms"}
    assert 0.0 <= run_scores["hit@5"] <= 1.0
    _wait_for(lambda: len(_experiment_spans(langfuse_server)) >= len(items))
    spans = _experiment_spans(langfuse_server)
    dataset_id = langfuse_server.datasets()["samples"]["id"]
    assert {s.attributes.get("langfuse.experiment.dataset.id") for s in spans} == {dataset_id}
    # The chain's own traces (one per item) went out beside the experiment's.
    _wait_for(lambda: len([s for s in langfuse_server.spans() if s.name == "question"]) >= 4)


def _experiment_spans(server: FakeLangfuse) -> list[ExportedSpan]:
    return [s for s in server.spans() if s.name == "experiment-item-run"]
