"""`python -m app eval` as support staff run it, in its own process on an embedded store with
the samples ingested by the CLI: on the embedded model (llama.cpp, the bundled Gemma 3 270M)
a part of the samples' golden set meets the thresholds measured for it; against a served
model (the fake OpenAI-compatible server, reading the excerpts) a damaged answer prompt makes
the run fail its baseline with exit 1, naming the metrics and the items; with Langfuse keys
the set is kept as a Langfuse dataset and each run is an experiment on it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES
from tests.fakes.langfuse_server import SECRET_KEY, FakeLangfuse, unique_public_key
from tests.fakes.llm import step_of
from tests.fakes.openai_server import FakeLLMServer
from tests.test_eval_chain import read_reply

pytest_plugins = ["tests.fakes.openai_server", "tests.fakes.langfuse_server"]

GOLDEN = ROOT / "bench" / "golden" / "samples.jsonl"
# Measured on the embedded stack with --limit 12 (8 answers, 2 not found, 2 clarifications,
# English and Russian; see the README): outcome 0.75, facts 0.733, citations 1.0, hit@5 1.0,
# MRR@10 0.933, nothing unsupported. Each threshold is a little under the measured figure.
EMBEDDED_LIMIT = 12
THRESHOLDS = {
    "outcome_accuracy": 0.65,
    "fact_recall": 0.65,
    "citation_precision": 0.9,
    "hit@5": 0.9,
    "mrr@10": 0.85,
}
MAX_UNSUPPORTED = 1
SUMMARY_KEYS = {
    "items", "outcome_accuracy", "fact_recall", "citation_precision", "unsupported", "hit@5",
    "mrr@10", "p50_ms",
}  # fmt: skip


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A process environment on a store with the samples, ingested as the quickstart does."""
    folder = tmp_path_factory.mktemp("eval")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("QDRANT_", "LLM_", "LANGFUSE_", "BOT_", "CHAIN_", "EMBEDDING_", "EVAL_")
        )
    }
    env |= {"QDRANT_PATH": str(folder / "qdrant"), "HF_HUB_OFFLINE": "1", "LLM_PROBE": "0"}
    for source, name, language in (("en", "company", "en"), ("ru", "company-ru", "ru")):
        subprocess.run(
            [sys.executable, "-m", "ingestion", "add", str(SAMPLES / source),
             "--collection", name, "--language", language],
            env=env, cwd=folder, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    return env


def _eval(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "eval", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_embedded_stack_meets_the_samples_thresholds(environment: dict[str, str]) -> None:
    done = _eval(environment, "--golden", str(GOLDEN), "--limit", str(EMBEDDED_LIMIT), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints only the JSON line"
    summary = json.loads(lines[0])
    assert summary["items"] == EMBEDDED_LIMIT
    assert summary["errors"] == 0
    low = {k: summary[k] for k, floor in THRESHOLDS.items() if summary[k] < floor}
    assert not low, summary
    assert summary["unsupported"] <= MAX_UNSUPPORTED, summary


def test_a_damaged_prompt_fails_against_the_baseline(
    environment: dict[str, str], fake_llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    fake_llm_server.responder = lambda r: read_reply(step_of(r.regex), r.system, r.user, r.regex)
    env = environment | {"LLM_BASE_URL": fake_llm_server.base_url, "LLM_MODEL": "served"}
    golden = tmp_path / "golden.jsonl"
    lines = GOLDEN.read_text(encoding="utf-8").splitlines()
    golden.write_text("\n".join(ln for ln in lines if '"en-' in ln and "clarify" not in ln))
    baseline = tmp_path / "baseline.jsonl"
    done = _eval(env, "--golden", str(golden), "--limit", "6", "--out", str(baseline))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "expected \\ got" in done.stdout  # the table, then the JSON line last
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) >= SUMMARY_KEYS
    assert len(baseline.read_text().splitlines()) == 7  # six items and the summary

    prompts = Path(shutil.copytree(ROOT / "prompts", tmp_path / "prompts"))
    answer = prompts / "answer.md"
    answer.write_text(answer.read_text(encoding="utf-8").replace("{{ passage.text }}", ""))
    env["CHAIN_PROMPTS_DIR"] = str(prompts)
    done = _eval(env, "--golden", str(golden), "--limit", "6", "--baseline", str(baseline),
                 "--json")  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "worse than the baseline: " in done.stderr
    assert "fact_recall: " in done.stderr
    assert "en-annual-leave: outcome answer -> not_found" in done.stderr
    assert len(done.stdout.strip().splitlines()) == 1


def test_with_langfuse_keys_the_set_is_a_dataset_and_the_run_an_experiment(
    environment: dict[str, str],
    fake_llm_server: FakeLLMServer,
    langfuse_server: FakeLangfuse,
    tmp_path: Path,
) -> None:
    fake_llm_server.responder = lambda r: read_reply(step_of(r.regex), r.system, r.user, r.regex)
    env = environment | {
        "LLM_BASE_URL": fake_llm_server.base_url,
        "LLM_MODEL": "served",
        "LANGFUSE_PUBLIC_KEY": unique_public_key(),
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": langfuse_server.base_url,
    }
    done = _eval(env, "--golden", str(GOLDEN), "--dataset", "samples", "--limit", "3", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    stored = langfuse_server.dataset_items("samples")
    assert [i["metadata"]["golden_id"] for i in stored] == [
        "en-annual-leave", "en-parking", "en-leave-kinds",
    ]  # fmt: skip
    run_scores = {s["name"] for s in langfuse_server.scores() if s.get("datasetRunId")}
    assert {"outcome_accuracy", "fact_recall", "hit@5"} <= run_scores

    # The dataset alone is a golden set: support staff may edit it in Langfuse.
    done = _eval(env, "--dataset", "samples", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["items"] == 3
    runs = {s["datasetRunId"] for s in langfuse_server.scores() if s.get("datasetRunId")}
    assert len(runs) == 2
