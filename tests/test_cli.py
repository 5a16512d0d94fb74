"""`python -m ingestion` in a subprocess: exit codes, the JSON summary, list and delete, usage and
configuration errors, and a store held by another process.

Each `add` that gets past argument parsing loads the model (~10 s), so the ingesting runs are
made once per module and the tests read their results."""

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kb.edge import EdgeStore

SUMMARY_KEYS = {"added", "unchanged", "replaced", "failed", "chunks_written", "seconds"}
GOOD = {
    "guide.md": "# Guide\n\nHow to request a parking permit at the front desk.",
    "sub/notes.txt": "Canteen notes\n\nThe canteen opens at noon on weekdays.",
    "page.html": "<html><head><title>Page</title></head><body><p>Wifi password is on "
    "the fridge.</p></body></html>",
}
GOOD_IDS = ["guide.md", "page.html", "sub/notes.txt"]


def cli_env(qdrant_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QDRANT_", "EMBEDDING_", "INGEST_"))
    }
    env.update(QDRANT_PATH=str(qdrant_path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], qdrant_path: Path, cwd: Path, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    # cwd: the settings also read a .env file from the working directory; keep it empty.
    return subprocess.run(
        [sys.executable, "-m", "ingestion", *args],
        capture_output=True,
        text=True,
        env=cli_env(qdrant_path, **extra_env),
        cwd=cwd,
        timeout=120,
        check=False,
    )


def last_json(stdout: str) -> dict[str, object]:
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary


@dataclass(frozen=True)
class Runs:
    root: Path
    qdrant: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Two `add` runs into one store: a clean folder, then the same folder again together with
    a new good file and a broken one."""
    root = tmp_path_factory.mktemp("cli")
    for name, text in GOOD.items():
        path = root / "kb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    (root / "extra.md").write_text("# Extra\n\nVisitors sign in at reception.", encoding="utf-8")
    qdrant = root / "qdrant"

    first = run_cli(["add", "kb", "--collection", "docs", "--json"], qdrant, root)
    second = run_cli(
        ["add", "kb", "broken.pdf", "extra.md", "--collection", "docs", "--json"], qdrant, root
    )
    return Runs(root, qdrant, first, second)


@pytest.mark.slow
def test_add_prints_a_json_summary_last(runs: Runs) -> None:
    assert runs.first.returncode == 0, runs.first.stderr
    summary = last_json(runs.first.stdout)
    assert set(summary) == SUMMARY_KEYS
    assert {k: summary[k] for k in ("added", "unchanged", "replaced", "failed")} == {
        "added": 3,
        "unchanged": 0,
        "replaced": 0,
        "failed": 0,
    }
    assert summary["chunks_written"] == 3
    assert isinstance(summary["seconds"], float)
    for doc_id in GOOD_IDS:
        assert f"added     {doc_id}: 1 chunk" in runs.first.stdout


@pytest.mark.slow
def test_second_add_reports_unchanged_and_a_broken_file(runs: Runs) -> None:
    assert runs.second.returncode == 1, runs.second.stderr
    summary = last_json(runs.second.stdout)
    assert {k: v for k, v in summary.items() if k != "seconds"} == {
        "added": 1,
        "unchanged": 3,
        "replaced": 0,
        "failed": 1,
        "chunks_written": 1,
    }
    lines = runs.second.stdout.splitlines()
    assert "failed    broken.pdf: corrupt PDF: the file is truncated (no end-of-file marker)" in (
        lines
    )
    assert "added     extra.md: 1 chunk" in lines


@pytest.mark.slow
def test_list_and_delete(runs: Runs) -> None:
    listed = run_cli(["list"], runs.qdrant, runs.root)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "docs: 4 documents (en)"

    as_json = run_cli(["list", "--json"], runs.qdrant, runs.root)
    assert json.loads(as_json.stdout) == [{"collection": "docs", "documents": 4, "language": "en"}]

    documents = run_cli(["list", "--collection", "docs", "--json"], runs.qdrant, runs.root)
    assert documents.returncode == 0, documents.stderr
    rows = json.loads(documents.stdout)
    assert sorted(row["doc_id"] for row in rows) == sorted([*GOOD_IDS, "extra.md"])
    assert next(row for row in rows if row["doc_id"] == "page.html")["title"] == "Page"

    deleted = run_cli(["delete", "sub/notes.txt", "--collection", "docs"], runs.qdrant, runs.root)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted sub/notes.txt from docs (1 chunk)" in deleted.stdout

    missing = run_cli(["delete", "sub/notes.txt", "--collection", "docs"], runs.qdrant, runs.root)
    assert missing.returncode == 1
    assert "sub/notes.txt is not in docs" in missing.stderr

    table = run_cli(["list", "--collection", "docs"], runs.qdrant, runs.root)
    assert table.returncode == 0, table.stderr
    assert "sub/notes.txt" not in table.stdout
    assert table.stdout.splitlines()[-1] == "3 documents in docs"

    unknown = run_cli(["list", "--collection", "nope"], runs.qdrant, runs.root)
    assert unknown.returncode == 2
    assert "collection 'nope' does not exist" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "kb"], "the following arguments are required: --collection"),
        (["add", "kb", "--collection", "bad name!"], "invalid collection name 'bad name!'"),
        (["add", "kb", "--collection", "docs", "--language", "fr"], "invalid choice: 'fr'"),
        (["delete", "x.md"], "the following arguments are required: --collection"),
        ([], "the following arguments are required: command"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(args, tmp_path / "qdrant", tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    # Refused before anything was opened or written.
    assert not (tmp_path / "qdrant").exists()


@pytest.mark.parametrize(
    ("args", "variable", "value"),
    [
        (["list"], "QDRANT_SHARD_NUMBER", "0"),
        (["add", "kb", "--collection", "docs"], "INGEST_MAX_FILE_MB", "abc"),
        (["add", "kb", "--collection", "docs"], "EMBEDDING_BATCH_SIZE", "-1"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(
    tmp_path: Path, args: list[str], variable: str, value: str
) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "a.md").write_text("# A\n\ntext", encoding="utf-8")
    result = run_cli(args, tmp_path / "qdrant", tmp_path, **{variable: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: configuration error: {variable}: ")
    assert "Traceback" not in result.stderr


def test_store_held_by_another_process_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\ntext", encoding="utf-8")
    held = EdgeStore(tmp_path / "qdrant")
    try:
        for args in (["add", "a.md", "--collection", "docs"], ["list"]):
            result = run_cli(args, tmp_path / "qdrant", tmp_path)
            assert result.returncode == 2
            assert "is in use by another process" in result.stderr
            assert "Stop that process first" in result.stderr
            assert "set QDRANT_URL" in result.stderr
    finally:
        held.close_sync()
    # Once released, the folder opens.
    assert run_cli(["list"], tmp_path / "qdrant", tmp_path).returncode == 0
