"""Gated releases as support staff run them, each command in its own process on an embedded
store with the English samples: a candidate staged with `--stage` is invisible to users; a
release whose candidate loses answers of the golden set is refused, naming the items; a good
one goes through, and rollback restores the version before. The chain answers with the
reading model on the fake OpenAI-compatible server (fast and deterministic)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kb.edge import copy_sparse
from tests.conftest import ROOT, SAMPLES
from tests.fakes.llm import step_of
from tests.fakes.openai_server import FakeLLMServer
from tests.test_eval_chain import read_reply

pytest_plugins = ["tests.fakes.openai_server"]

GOLDEN = ROOT / "bench" / "golden" / "samples.jsonl"
# Two answers from the vacation policy, two from other documents, one "not found".
ITEMS = ["en-annual-leave", "en-carry-over", "en-expense-deadline", "en-reset-link", "en-parking"]
VACATION = "handbook/vacation-policy.md"
KITCHEN = "# Office kitchen\n\nThe coffee machine on the second floor is descaled every Friday.\n"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def samples_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The English samples in collection "company", ingested by the CLI once."""
    folder = tmp_path_factory.mktemp("release")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("QDRANT_", "LLM_", "LANGFUSE_", "BOT_", "CHAIN_", "EMBEDDING_", "EVAL_")
        )
    }
    env |= {"QDRANT_PATH": str(folder / "qdrant"), "HF_HUB_OFFLINE": "1", "LLM_PROBE": "0"}
    done = _run(env, "ingestion", "add", str(SAMPLES / "en"), "--collection", "company")
    assert done.returncode == 0, done.stderr[-2000:]
    return folder / "qdrant", env


@pytest.fixture
def env(
    samples_store: tuple[Path, dict[str, str]], tmp_path: Path, fake_llm_server: FakeLLMServer
) -> dict[str, str]:
    """A copy of the samples store for this test, a reading LLM and a small golden set."""
    source, base = samples_store
    shutil.copytree(source, tmp_path / "qdrant", copy_function=copy_sparse)
    fake_llm_server.responder = lambda r: read_reply(step_of(r.regex), r.system, r.user, r.regex)
    golden = tmp_path / "golden.jsonl"
    lines = GOLDEN.read_text(encoding="utf-8").splitlines()
    golden.write_text(
        "\n".join(ln for ln in lines if json.loads(ln)["id"] in ITEMS) + "\n", encoding="utf-8"
    )
    return base | {
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "LLM_BASE_URL": fake_llm_server.base_url,
        "LLM_MODEL": "served",
        "GOLDEN": str(golden),
    }


def _listing(env: dict[str, str]) -> dict[str, object]:
    done = _run(env, "ingestion", "list", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return next(row for row in rows if row["collection"] == "company")


def _found(env: dict[str, str], query: str) -> list[str]:
    done = _run(env, "ingestion", "search", query, "--collection", "company", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    return [hit["doc_id"] for hit in json.loads(done.stdout.strip().splitlines()[-1])]


def test_a_release_that_loses_answers_is_refused(env: dict[str, str]) -> None:
    done = _run(env, "ingestion", "release", "company")
    assert done.returncode == 2
    assert "has no candidate to release" in done.stderr

    done = _run(env, "ingestion", "delete", VACATION, "--collection", "company", "--stage")
    assert done.returncode == 0, done.stderr[-2000:]
    # Users still read the live version; the candidate lacks the document.
    row = _listing(env)
    assert (row["live"], row["candidate"]) == ("company", "company@v2")
    assert row["candidate_documents"] == row["documents"] - 1  # type: ignore[operator]
    assert VACATION in _found(env, "annual leave days")

    done = _run(env, "ingestion", "release", "company", "--require-eval", "--golden", env["GOLDEN"])
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "release refused" in done.stderr
    # The evaluation printed both versions side by side, then named what got worse.
    assert "candidate worse than live: outcome_accuracy" in done.stderr
    assert "en-annual-leave: outcome answer -> not_found" in done.stderr
    assert "en-carry-over: outcome answer -> not_found" in done.stderr
    assert "en-reset-link" not in done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["collections"] == {
        "company": {"live": "company", "candidate": "company@v2", "previous": None}
    }
    assert report["live"]["items"] == report["candidate"]["items"] == len(ITEMS)
    assert report["live"]["outcome_accuracy"] == 1.0
    # Nothing changed for users: live is as it was, the candidate waits to be fixed.
    row = _listing(env)
    assert (row["live"], row["candidate"]) == ("company", "company@v2")
    assert VACATION in _found(env, "annual leave days")


def test_a_good_release_goes_through_and_rollback_restores(
    env: dict[str, str], tmp_path: Path
) -> None:
    new = tmp_path / "new"
    new.mkdir()
    (new / "kitchen.md").write_text(KITCHEN, encoding="utf-8")
    done = _run(env, "ingestion", "add", str(new), "--collection", "company", "--stage")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kitchen.md" not in _found(env, "coffee machine descaled")

    done = _run(env, "ingestion", "release", "company", "--require-eval", "--golden", env["GOLDEN"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "released company: live company@v2, previous company" in done.stdout
    row = _listing(env)
    assert (row["live"], row["candidate"], row["previous"]) == ("company@v2", None, "company")
    assert _found(env, "coffee machine descaled")[0] == "kitchen.md"
    # The candidate started as a copy of live: everything else is still there.
    assert VACATION in _found(env, "annual leave days")

    done = _run(env, "ingestion", "rollback", "company")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kitchen.md" not in _found(env, "coffee machine descaled")
    row = _listing(env)
    assert (row["live"], row["candidate"], row["previous"]) == ("company", "company@v2", None)
