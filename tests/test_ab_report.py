"""`prompts report`: per prompt and variant, the feedback scores on the answers each variant
wrote and the eval runs that measured it, read back from the local Langfuse receiver through
the real SDK's public API client (and from `eval --out` files), in process and as the CLI."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langfuse import Langfuse

from app.ab.pin import pin_variant, prompt_metadata
from app.ab.report import FEEDBACK_SCORE, ReportError, VariantStats, report
from app.ab.variants import parse_variants
from app.bot.handlers.feedback import SCORE, score_id
from app.chain.chain import Chain
from app.chain.types import ChainRequest
from app.eval.golden import dataset_items, upsert_dataset
from app.eval.metrics import summarize
from app.eval.report import write_results
from app.eval.runner import Evaluator, eval_chain
from app.prompts import PromptStore, load_prompt_files
from app.settings import ChainSettings
from app.tracing import Tracer, trace_id_for
from kb.search import HybridSearcher
from tests.conftest import ROOT, without_env
from tests.fakes.langfuse_server import SECRET_KEY, FakeLangfuse, LangfuseFactory, unique_public_key
from tests.test_ab import LLM_STEPS, users_with, variant_chain
from tests.test_eval_chain import english_items, reading_llm

pytest_plugins = ["tests.fakes.langfuse_server"]

SINCE = datetime.now(UTC) - timedelta(days=1)


def damaged_variant(tmp_path: Path) -> Path:
    """The shipped prompts plus answer.prod-b.md, an answer prompt that drops the excerpts'
    text (a variant an eval must find worse)."""
    folder = Path(shutil.copytree(ROOT / "prompts", tmp_path / "prompts"))
    text = (folder / "answer.md").read_text(encoding="utf-8")
    (folder / "answer.prod-b.md").write_text(text.replace("{{ passage.text }}", ""), "utf-8")
    return folder


def test_the_report_reads_the_score_the_bot_records() -> None:
    assert FEEDBACK_SCORE == SCORE


def variant_eval_chain(prompts: PromptStore, tracer: Tracer, searcher: HybridSearcher) -> Chain:
    """The eval's chain on a searcher's store, with the reading model for every step."""
    return eval_chain(
        searcher=searcher,
        store=searcher.store,
        llm=dict.fromkeys(LLM_STEPS, reading_llm()),
        prompts=prompts,
        tracer=tracer,
        settings=without_env(ChainSettings),
    )


async def rate_answers(chain: Chain, store: PromptStore, tracer: Tracer) -> None:
    """Three users on each variant ask; A users rate 👍, 👍, 👎 (then change the 👎 to 👍),
    B users 👎, 👎 and one does not rate."""
    ratings: dict[str, list[bool | None]] = {
        "production": [True, True, False],
        "prod-b": [False, False, None],
    }
    for label, votes in ratings.items():
        users = users_with(store, "answer", label, 3)
        for n, (user, vote) in enumerate(zip(users, votes, strict=True)):
            question = "How many vacation days do I get?"
            request = ChainRequest(question, ["company"], user_id=user, run_key=f"{label}:{n}")
            result = await chain.run(request)
            if vote is not None:
                up = float(vote)
                tracer.score(
                    result.trace_id, SCORE, up, boolean=True, score_id=score_id(result.trace_id, n)
                )
    # The same score id again replaces the rating: it counts once, as it is now.
    changed = trace_id_for("production:2")
    tracer.score(changed, SCORE, 1.0, boolean=True, score_id=score_id(changed, 2))


async def evaluate(
    folder: Path, client: Langfuse, searcher: HybridSearcher, results: Path
) -> dict[str, dict[str, Any]]:
    """Eval runs as `eval --prompt-label` makes them: the defaults and prod-b as Langfuse
    experiments, prod-b again as an --out file; each run's summary by label."""
    items = english_items()[:4]
    upsert_dataset(client, "ab", items)
    found = dataset_items(client, "ab")
    tracer = Tracer(client)
    summaries = {}
    for label in ("production", "prod-b"):
        pinned = PromptStore(load_prompt_files(folder), client)
        await pin_variant(pinned, [label])
        metadata = prompt_metadata(pinned)
        chain = variant_eval_chain(pinned, tracer, searcher)
        evaluator = Evaluator(chain, progress=False, metadata=metadata)
        summaries[label] = summarize(await evaluator.run_experiment(client, "ab", found))
        if label == "prod-b":
            rows = await evaluator.run(items)
            write_results(results, rows, summarize(rows) | metadata)
    tracer.flush()
    return summaries


async def test_report_aggregates_feedback_and_eval_runs_per_variant(
    tmp_path: Path,
    make_langfuse: LangfuseFactory,
    langfuse_server: FakeLangfuse,
    sample_searcher: HybridSearcher,
) -> None:
    folder = damaged_variant(tmp_path)
    client = make_langfuse()
    tracer = Tracer(client)
    variants = parse_variants("answer=production:1,prod-b:1")
    live = PromptStore(load_prompt_files(folder), client, variants=variants)
    await live.refresh()
    await rate_answers(variant_chain(reading_llm(), tracer, live, sample_searcher), live, tracer)
    results = tmp_path / "prod-b.jsonl"
    summaries = await evaluate(folder, client, sample_searcher, results)
    # The damaged variant is measurably worse: the report must be able to show it.
    assert summaries["prod-b"]["fact_recall"] < summaries["production"]["fact_recall"]

    rows = report(client, [results], since=SINCE, default_label="production")
    stats = {(r.prompt, r.label): r for r in rows}
    assert list(stats) == [("answer", "prod-b"), ("answer", "production")]
    a, b = stats["answer", "production"], stats["answer", "prod-b"]
    assert (a.answers, a.rated, a.positive) == (3, 3, 3)
    assert (b.answers, b.rated, b.positive) == (3, 2, 0)
    assert (a.share, b.share) == (1.0, 0.0)
    # Three ratings each are too few to tell: the 95% intervals still overlap.
    assert a.interval() == (0.438, 1.0)
    assert b.interval() == (0.0, 0.658)
    assert [run.source.split(":")[0] for run in a.runs] == ["langfuse"]
    assert sorted(run.source.split(":")[0] for run in b.runs) == ["file", "langfuse"]
    recall = summaries["production"]["fact_recall"]
    assert a.metrics()["fact_recall"] == pytest.approx(recall, abs=1e-3)
    assert b.metrics()["fact_recall"] < a.metrics()["fact_recall"]

    # The CLI prints the same, as a table and the JSON line last.
    done = await asyncio.to_thread(cli_report, langfuse_server, "--results", str(results))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["prompt", "variant", "answers", "rated"]
    assert lines[1].split()[:5] == ["answer", "prod-b", "3", "2", "0.00"]
    assert lines[2].split()[:5] == ["answer", "production", "3", "3", "1.00"]
    assert json.loads(lines[-1])["variants"] == [r.to_dict() for r in rows]


def cli_report(server: FakeLangfuse, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m app prompts report` in its own process, with keys for the receiver."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "CHAIN_"))}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "LANGFUSE_PUBLIC_KEY": unique_public_key(),
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": server.base_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "app", "prompts", "report", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_results_files_alone_and_their_errors(tmp_path: Path) -> None:
    summary = {"items": 3, "fact_recall": 0.5, "outcome_accuracy": 1.0}
    runs = {
        "base.jsonl": summary | {"prompt_variants": "answer=production,clarify=production"},
        "b.jsonl": summary
        | {"fact_recall": 0.25, "prompt_variants": "answer=prod-b,clarify=production"},
    }  # fmt: skip
    for name, line in runs.items():
        (tmp_path / name).write_text(json.dumps(line) + "\n", encoding="utf-8")
    paths = [tmp_path / name for name in runs]
    rows: list[VariantStats] = report(None, paths, since=SINCE, default_label="production")
    # clarify ran its default in both: it is not under test, so it gets no row.
    assert [(r.prompt, r.label, len(r.runs)) for r in rows] == [
        ("answer", "prod-b", 1), ("answer", "production", 1),
    ]  # fmt: skip
    assert [r.metrics()["fact_recall"] for r in rows] == [0.25, 0.5]
    with pytest.raises(ReportError, match="nothing to read"):
        report(None, [], since=SINCE, default_label="production")
    (tmp_path / "old.jsonl").write_text(json.dumps(summary) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match="does not say which prompt variants"):
        report(None, [tmp_path / "old.jsonl"], since=SINCE, default_label="production")
    (tmp_path / "junk.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ReportError, match="cannot read eval results"):
        report(None, [tmp_path / "junk.jsonl"], since=SINCE, default_label="production")
