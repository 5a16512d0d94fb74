"""`python -m ingestion add` takes a new collection's language from the collections file when
the file declares one (the bot reads the same file), and refuses a --language that contradicts
it before anything is written."""

import json
from pathlib import Path

from tests.test_cli import run_cli

COLLECTIONS = """\
collections:
  - name: wiki-ru
    language: ru
    readers: {members_of: [-1001234567890]}
  - name: handbook
    readers: {members_of: [-1001234567890]}
"""


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    work = tmp_path / "work"
    docs = tmp_path / "docs"
    (docs / "ru").mkdir(parents=True)
    work.mkdir()
    (docs / "ru" / "otpusk.md").write_text(
        "\n\n".join(["# Отпуск", "Сотрудникам положено двадцать восемь дней отпуска."]),
        encoding="utf-8",
    )
    (work / "config.yaml").write_text(COLLECTIONS, encoding="utf-8")
    return work, docs, tmp_path / "qdrant"


def _languages(qdrant: Path, work: Path) -> dict[str, str]:
    listing = run_cli(["list", "--json"], qdrant, work)
    assert listing.returncode == 0, listing.stderr
    return {row["collection"]: row["language"] for row in json.loads(listing.stdout)}


def test_the_declared_language_is_the_default_and_a_contradiction_is_refused(
    tmp_path: Path,
) -> None:
    work, docs, qdrant = _setup(tmp_path)
    config = str(work / "config.yaml")

    refused = run_cli(
        ["add", str(docs / "ru"), "--collection", "wiki-ru", "--language", "en"],
        qdrant,
        work,
        BOT_COLLECTIONS_FILE=config,
    )
    assert refused.returncode == 2
    assert "--language en contradicts COLLECTIONS_FILE" in refused.stderr
    assert "declares 'wiki-ru' as ru" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _languages(qdrant, work) == {}, "nothing was written"

    # No --language: the file's (read under its other name too, as compose passes it).
    added = run_cli(
        ["add", str(docs / "ru"), "--collection", "wiki-ru", "--json"],
        qdrant,
        work,
        BOT_COLLECTIONS_FILE=config,
    )
    assert added.returncode == 0, added.stderr
    assert _languages(qdrant, work) == {"wiki-ru": "ru"}


def test_a_broken_collections_file_is_a_usage_error(tmp_path: Path) -> None:
    work, docs, qdrant = _setup(tmp_path)
    (work / "collections.yaml").write_text("collections: [name: x\n", encoding="utf-8")
    result = run_cli(["add", str(docs / "ru"), "--collection", "wiki-ru"], qdrant, work)
    assert result.returncode == 2
    assert "COLLECTIONS_FILE collections.yaml" in result.stderr
    assert "Traceback" not in result.stderr
