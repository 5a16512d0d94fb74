"""Retrieval benchmark: ingest a corpus into a fresh embedded store, run each query set through
the search the answer chain uses, and report document-level recall, MRR and latency.

Beside the hybrid search it ranks the same candidates by each signal alone (dense: the chunk's
cosine; bm25), so a fusion that falls below its better signal shows in the same run."""

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings

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


async def run_set(
    searcher: HybridSearcher, queries: list[dict[str, Any]], settings: SearchSettings
) -> tuple[dict[str, Any], list[float]]:
    """Every query of one set: hybrid (timed, through the searcher) and each signal alone."""
    store, sparse = searcher.store, searcher.sparse
    spec = await store.get_collection(COLLECTION)
    assert spec is not None
    embedder = searcher.dense.for_model(spec.embedding_model, COLLECTION)
    ranks: dict[str, list[int | None]] = {"hybrid": [], "dense": [], "bm25": []}
    latencies = []
    for query in queries:
        relevant = set(query["relevant"])
        started = time.perf_counter()
        hits = await searcher.search(query["query"], [COLLECTION], limit=FETCH)
        latencies.append((time.perf_counter() - started) * 1000)
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
    return result, latencies


async def run(
    corpus: Path, query_files: Sequence[Path], language: str, model: str | None
) -> dict[str, Any]:
    """Ingest once, run each query set, measure."""
    async with fresh_bench(language, model) as bench:
        report = await bench.ingestor.ingest(discover([corpus]), COLLECTION, language)
        if report.count("failed"):
            failed = [f"{f.doc_id}: {f.reason}" for f in report.files if f.status == "failed"]
            print("failed to ingest:", *failed, sep="\n  ", file=sys.stderr)
        settings = load_settings(SearchSettings)
        searcher = HybridSearcher(bench.store, bench.embedders, bench.sparse, settings)
        await searcher.search("warm-up query", [COLLECTION])
        bench.dense.clear_query_cache()
        spec = await bench.store.get_collection(COLLECTION)
        result: dict[str, Any] = {
            "model": bench.dense.model_name,
            "language": language,
            "chunks": report.chunks_written,
            "dense_spread": spec.dense_spread if spec else None,
        }
        latencies: list[float] = []
        for path in query_files:
            lines = path.read_text(encoding="utf-8").splitlines()
            queries = [json.loads(line) for line in lines if line.strip()]
            result[path.parent.name], timed = await run_set(searcher, queries, settings)
            latencies.extend(timed)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    result["p50_ms"] = round(quantiles[49], 2)
    result["p95_ms"] = round(quantiles[94], 2)
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
    args = parser.parse_args()
    print_result(asyncio.run(run(args.corpus, args.queries, args.language, args.model)))


if __name__ == "__main__":
    main()
