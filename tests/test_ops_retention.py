"""Retention against the real stores: Langfuse traces past TRACE_RETENTION_DAYS deleted through
its public API (the local receiver), the knowledge loop's records past LOOP_RETENTION_DAYS
deleted from the embedded store; a store that fails does not stop the others. And kept
originals: limits, the folder layout, deletion with their document."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from langfuse.api import AsyncLangfuseAPI

from app.loop.records import GapRecord, LoopRecords, Outcome
from app.ops.retention import Retention
from app.ops.traces import TraceAdmin
from app.tracing import Tracer
from ingestion.originals import Originals
from ingestion.pipeline import discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from tests.conftest import IngestorFactory
from tests.fakes.langfuse_server import SECRET_KEY, FakeLangfuse, LangfuseFactory

pytest_plugins = ["tests.fakes.langfuse_server"]


def question(tracer: Tracer, trace_id: str) -> None:
    with tracer.run(trace_id=trace_id, name="question", input={"message": "q"}, user_id="5"):
        pass


async def test_retention_deletes_old_traces_and_loop_records_only(
    edge_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,
) -> None:
    tracer = Tracer(make_langfuse())
    question(tracer, "a" * 32)
    await asyncio.sleep(0.05)
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.05)
    question(tracer, "b" * 32)
    tracer.flush()
    loop = LoopRecords(
        edge_store, DenseEmbedders.of(dense_embedder), sparse_embedder, language="en",
        retention_days=90,
    )  # fmt: skip
    now = boundary + timedelta(days=30)
    for age_days in (1, 89, 91, 400):
        await loop.add(
            GapRecord(f"question {age_days}", "q", ("company",), Outcome.NOT_FOUND,
                      asked_at=now - timedelta(days=age_days))
        )  # fmt: skip
    api = AsyncLangfuseAPI(base_url=langfuse_server.base_url, username="pk", password=SECRET_KEY)
    retention = Retention(loop, TraceAdmin(api), trace_days=30)

    removed, failed = await retention.run(now)

    assert failed == {}
    assert removed == {"traces": 1, "loop_records": 2}
    assert langfuse_server.deleted_traces() == {"a" * 32}
    kept = await loop.since(now - timedelta(days=1000))
    assert sorted(r.question for r in kept) == ["question 1", "question 89"]

    # Langfuse unreachable: reported, and the loop's records are still cleaned.
    down = AsyncLangfuseAPI(base_url="http://127.0.0.1:1", username="pk", password="x", timeout=2)
    removed, failed = await Retention(loop, TraceAdmin(down), trace_days=30).run(
        now + timedelta(days=60)
    )
    assert set(failed) == {"traces"}
    assert removed == {"loop_records": 1}
    # TRACE_RETENTION_DAYS=0: traces are left to Langfuse, nothing is asked of it.
    asked = len(langfuse_server.requests)
    await Retention(None, TraceAdmin(api), trace_days=0).run(now)
    assert len(langfuse_server.requests) == asked


async def test_kept_originals_respect_limits_and_go_with_their_document(
    tmp_path: Path, edge_store: EdgeStore, make_ingestor: IngestorFactory
) -> None:
    originals = Originals(tmp_path / "originals", max_file_bytes=100, max_total_bytes=150)
    assert originals.refusal("hr", "big.md", 101) == "file"
    assert originals.refusal("hr", "a.md", 80) is None
    assert originals.keep("hr", "a.md", b"# A\n\n" + b"a" * 75) == tmp_path / "originals/hr/a.md"
    assert originals.refusal("hr", "b.md", 80) == "total"
    assert originals.refusal("hr", "a.md", 90) is None, "a replacement counts the old one out"
    assert originals.refusal("hr", "c.md", 40, reserved=40) == "total"
    for unsafe in ("../escape.md", "sub/x.md", "..", ""):
        assert originals.path("hr", unsafe) is None
        assert originals.keep("hr", unsafe, b"x") is None
    assert not (tmp_path / "escape.md").exists()

    # The folder is what `python -m ingestion add ORIGINALS_DIR/hr` ingests: same doc ids.
    ingestor = make_ingestor(edge_store)
    ingestor.originals = originals
    report = await ingestor.ingest(discover([tmp_path / "originals/hr"]), "hr")
    assert [(f.doc_id, f.status) for f in report.files] == [("a.md", "added")]
    assert await ingestor.delete("hr", "a.md") > 0
    assert originals.find("hr", "a.md") is None
    assert originals.total_bytes() == 0
