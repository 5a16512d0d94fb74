"""Retrieval benchmark: ingest a corpus into a fresh embedded store, run every query through
the search the answer chain uses, report document-level recall, MRR and latency."""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings

COLLECTION = "bench"
# Chunks fetched per query: enough to find the first ten distinct documents.
FETCH = 50


def first_hit(ranked_docs: list[str], relevant: set[str]) -> int | None:
    """0-based rank of the first relevant document among the first ten, or None."""
    return next((i for i, doc in enumerate(ranked_docs[:10]) if doc in relevant), None)


async def run(corpus: Path, queries_file: Path, language: str) -> dict[str, float | int]:
    """Ingest, query, measure."""
    lines = queries_file.read_text(encoding="utf-8").splitlines()  # noqa: ASYNC240
    queries = [json.loads(line) for line in lines if line.strip()]
    async with fresh_bench() as bench:
        report = await bench.ingestor.ingest(discover([corpus]), COLLECTION, language)
        if report.count("failed"):
            failed = [f"{f.doc_id}: {f.reason}" for f in report.files if f.status == "failed"]
            print("failed to ingest:", *failed, sep="\n  ", file=sys.stderr)
        searcher = HybridSearcher(
            bench.store, bench.dense, bench.sparse, load_settings(SearchSettings)
        )
        await searcher.search("warm-up query", [COLLECTION])
        ranks: list[int | None] = []
        latencies = []
        for query in queries:
            started = time.perf_counter()
            hits = await searcher.search(query["query"], [COLLECTION], limit=FETCH)
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = list(dict.fromkeys(hit.chunk.doc_id for hit in hits))
            ranks.append(first_hit(ranked, set(query["relevant"])))
    n = len(queries)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "queries": n,
        "chunks": report.chunks_written,
        "recall@1": round(sum(r is not None and r < 1 for r in ranks) / n, 3),
        "recall@5": round(sum(r is not None and r < 5 for r in ranks) / n, 3),
        "recall@10": round(sum(r is not None for r in ranks) / n, 3),
        "mrr@10": round(sum(1 / (r + 1) for r in ranks if r is not None) / n, 3),
        "p50_ms": round(quantiles[49], 2),
        "p95_ms": round(quantiles[94], 2),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--language", choices=["en", "ru"], default="en")
    args = parser.parse_args()
    print_result(asyncio.run(run(args.corpus, args.queries, args.language)))


if __name__ == "__main__":
    main()
