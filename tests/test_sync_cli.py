"""`python -m ingestion sync` in a subprocess: every source of a collections file (one that
cannot be built is named, the others still sync), a folder with --dry-run, and usage errors."""

import json
from pathlib import Path

import pytest

from kb.edge import EdgeStore
from tests.conftest import FileWriter
from tests.test_cli import run_cli

pytestmark = pytest.mark.slow

COLLECTIONS = """
collections:
  - name: handbook
    readers: everyone
    sources:
      - kind: folder
        path: docs
      - kind: confluence
        url: https://wiki.example.com
        flavor: datacenter
        spaces: [HR]
        token_env: KB_TEST_CONFLUENCE_TOKEN
"""


async def test_sync_all_then_a_dry_run(tmp_path: Path, write_files: FileWriter) -> None:
    work = tmp_path / "work"
    docs = write_files(
        work / "docs",
        {"guide.md": "# Guide\n\nParking permits at the front desk.", "faq.md": "# FAQ\n\nNoon."},
    )
    (work / "collections.yaml").write_text(COLLECTIONS, encoding="utf-8")
    qdrant = tmp_path / "qdrant"
    done = run_cli(
        ["sync", "--all", "--json"],
        qdrant,
        work,
        COLLECTIONS_FILE=str(work / "collections.yaml"),
        SYNC_STATE_DIR=str(tmp_path / "state"),
    )
    assert done.returncode == 1, done.stderr
    assert "confluence https://wiki.example.com" in done.stderr
    assert "KB_TEST_CONFLUENCE_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
    rounds = json.loads(done.stdout.strip().splitlines()[-1])["sources"]
    folder = next(r for r in rounds if r["source"] == f"folder {docs}")
    assert (folder["added"], folder["deleted"], folder["error"]) == (2, 0, None)

    (docs / "faq.md").unlink()
    dry = run_cli(["sync", str(docs), "--collection", "handbook", "--dry-run"], qdrant, work)
    assert dry.returncode == 0, dry.stderr
    assert "would be deleted  faq.md" in dry.stdout
    store = EdgeStore(qdrant)
    try:
        assert sorted({d.doc_id for d in await store.list_documents("handbook")}) == [
            "faq.md",
            "guide.md",
        ]
    finally:
        await store.close()


def test_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["sync"],
        ["sync", str(tmp_path)],
        ["sync", str(tmp_path), "--collection", "kb", "--all"],
        ["sync", str(tmp_path), "--collection", "kb", "--every", "soon"],
    ):
        done = run_cli(args, tmp_path / "qdrant", tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
