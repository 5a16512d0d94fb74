"""The embedded store at scale: 10k, 100k and 1M chunks in one collection, built incrementally,
searched through the same HybridSearcher the answer chain uses.

The points are synthetic but drawn from real ones: the shared Debian corpus is ingested once
(real chunks, real MiniLM vectors, real BM25 vectors); a synthetic document copies one real
document, each of its chunks keeps the real chunk's text and payload, its dense vector is the
real one plus Gaussian noise (renormalised; cosine to the original about 0.86), its BM25 vector
keeps each real term with probability 0.8 and borrows a fifth of another chunk's terms, so
posting lists have the corpus's own shape; the document vector is the normalised mean of its
synthetic chunks, as ingestion computes it.

At each size: upsert throughput (points/s through EdgeStore.upsert, the adapter's own
conversion and any indexing it triggers), the final indexing (index_s), search p50/p95 over
the Debian questions and paraphrases (each question's embedding is computed and cached in an
untimed pass first: the times are the store, BM25 query terms, fusion and payload fetch), the
process's resident memory and the collection's disk use. The same questions on the real
1.7k-chunk collection, timed in the same pass, are the baseline (base_p95_ms) for the
machine's load. Resumable: --work keeps the store; a second run continues where it stopped.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qdrant_edge as qe

from app.settings import ChainSettings
from bench._common import print_result
from ingestion.pipeline import Ingestor, discover
from ingestion.settings import IngestionSettings
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedders, SparseEmbedder, document_vector
from kb.schema import Chunk, ChunkVectors, SparseVector
from kb.search import HybridSearcher
from kb.settings import EmbeddingSettings, SearchSettings, load_settings
from kb.store import DENSE, SPARSE

SHARED = Path("/work/shared/bench/debian-faq-en")
ROOT = Path(__file__).resolve().parent.parent
BASE = "debian"
SCALE = "scale"
SIZES = (10_000, 100_000, 1_000_000)
BATCH = 1_000
# Norm of the Gaussian noise added to a unit vector: cosine to the original ~ 1/sqrt(1 + n^2).
NOISE = 0.6
KEEP_TERM = 0.8
BORROW_TERMS = 0.2
SEED = 14


@dataclasses.dataclass(frozen=True)
class BasePoint:
    """One real chunk with its vectors."""

    chunk: Chunk
    dense: np.ndarray[Any, np.dtype[np.float32]]
    sparse: SparseVector


def load_base(store: EdgeStore) -> dict[str, list[BasePoint]]:
    """Every real chunk of the base collection, grouped by document, in chunk order."""
    shard = store._open(BASE)
    docs: dict[str, list[BasePoint]] = {}
    offset = None
    while True:
        records, offset = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=1000, with_payload=True, with_vector=True)
        )
        for record in records:
            vectors = record.vector
            assert isinstance(vectors, dict)
            sparse = vectors[SPARSE]
            assert isinstance(sparse, qe.SparseVector)
            chunk = Chunk.from_payload(record.payload or {})
            point = BasePoint(
                chunk,
                np.asarray(vectors[DENSE], dtype=np.float32),
                SparseVector(list(sparse.indices), list(sparse.values)),
            )
            docs.setdefault(chunk.doc_id, []).append(point)
        if offset is None:
            break
    for points in docs.values():
        points.sort(key=lambda p: p.chunk.chunk_index)
    return dict(sorted(docs.items()))


def resample_terms(
    rng: np.random.Generator, own: SparseVector, other: SparseVector
) -> SparseVector:
    """A real chunk's BM25 terms, thinned, with a few of another real chunk's."""
    terms = {i: v for i, v in zip(own.indices, own.values, strict=True) if rng.random() < KEEP_TERM}
    for i, v in zip(other.indices, other.values, strict=True):
        if rng.random() < BORROW_TERMS:
            terms.setdefault(i, v)
    if not terms:
        terms = dict(zip(own.indices[:1], own.values[:1], strict=True))
    indices = sorted(terms)
    return SparseVector(indices, [terms[i] for i in indices])


def synthetic_document(
    number: int, base: Sequence[list[BasePoint]], everything: Sequence[BasePoint]
) -> list[ChunkVectors]:
    """Synthetic document number (the same points every run: resumable)."""
    rng = np.random.default_rng([SEED, number])
    source = base[int(rng.integers(len(base)))]
    doc_id = f"syn/{number:07d}/{source[0].chunk.doc_id}"
    noise = rng.standard_normal((len(source), source[0].dense.shape[0]), dtype=np.float32)
    noise *= NOISE / np.sqrt(noise.shape[1])
    dense = np.stack([p.dense for p in source]) + noise
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    dense_lists = dense.tolist()
    doc = document_vector(dense_lists)
    points = []
    for point, vector in zip(source, dense_lists, strict=True):
        other = everything[int(rng.integers(len(everything)))]
        chunk = dataclasses.replace(
            point.chunk, doc_id=doc_id, collection=SCALE, content_hash=f"syn{number}"
        )
        points.append(
            ChunkVectors(chunk, vector, resample_terms(rng, point.sparse, other.sparse), doc)
        )
    return points


def synthetic_points(
    first_doc: int, base: Sequence[list[BasePoint]], everything: Sequence[BasePoint]
) -> Iterator[tuple[int, ChunkVectors]]:
    """(document number, point) from document first_doc on, endlessly."""
    number = first_doc
    while True:
        for point in synthetic_document(number, base, everything):
            yield number, point
        number += 1


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process (VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def disk_mb(folder: Path) -> float:
    """Allocated size of a folder (what du counts)."""
    total = sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())
    return round(total / 2**20, 1)


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile in ms, rounded."""
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


def load_questions() -> list[dict[str, Any]]:
    """The Debian FAQ's questions and our paraphrases of them."""
    files = [SHARED / "queries.jsonl", ROOT / "bench/debian-faq-paraphrases/queries.jsonl"]
    return [
        json.loads(line)
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


async def time_searches(
    searcher: HybridSearcher, questions: Sequence[dict[str, Any]], limit: int, rounds: int
) -> dict[str, Any]:
    """Search latency on the synthetic collection and on the real one, by turns; and how often a
    copy of a relevant document is among the first five documents found."""
    for question in questions:  # untimed: embeds (and caches) each question, warms the shards
        await searcher.search(question["query"], [SCALE], limit=limit)
        await searcher.search(question["query"], [BASE], limit=limit)
    scale_ms: list[float] = []
    base_ms: list[float] = []
    hits = base_hits = 0
    for _ in range(rounds):
        for question in questions:
            started = time.perf_counter()
            found = await searcher.search(question["query"], [SCALE], limit=limit)
            scale_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            real = await searcher.search(question["query"], [BASE], limit=limit)
            base_ms.append((time.perf_counter() - started) * 1000)
            relevant = set(question["relevant"])
            copies = list(dict.fromkeys(h.chunk.doc_id.split("/", 2)[2] for h in found))
            hits += bool(set(copies[:5]) & relevant)
            base_hits += bool({h.chunk.doc_id for h in real[:5]} & relevant)
    return {
        "p50_ms": percentile(scale_ms, 50),
        "p95_ms": percentile(scale_ms, 95),
        "base_p50_ms": percentile(base_ms, 50),
        "base_p95_ms": percentile(base_ms, 95),
        "copy_hit@5": round(hits / (rounds * len(questions)), 3),
        "base_hit@5": round(base_hits / (rounds * len(questions)), 3),
    }


class Progress:
    """How far the synthetic collection got (a JSON file beside the store)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {}
        self.docs: int = data.get("docs", 0)
        self.points: int = data.get("points", 0)

    def save(self, docs: int, points: int) -> None:
        """Record a written, flushed state."""
        self.docs, self.points = docs, points
        self.path.write_text(json.dumps({"docs": docs, "points": points}))


async def grow(
    store: EdgeStore,
    progress: Progress,
    target: int,
    base: Sequence[list[BasePoint]],
    everything: Sequence[BasePoint],
) -> float:
    """Add whole synthetic documents until the collection holds target points (the last one cut
    short); the seconds spent in EdgeStore.upsert."""
    upsert_s = 0.0
    if progress.points >= target:
        return upsert_s
    batch: list[ChunkVectors] = []
    points = progress.points
    number = progress.docs
    for number, point in synthetic_points(progress.docs, base, everything):
        if points + len(batch) >= target:
            break
        batch.append(point)
        if len(batch) >= BATCH:
            started = time.perf_counter()
            await store.upsert(SCALE, batch)
            upsert_s += time.perf_counter() - started
            points += len(batch)
            batch = []
            # Documents before the current one are complete.
            progress.save(number, points)
    if batch:
        started = time.perf_counter()
        await store.upsert(SCALE, batch)
        upsert_s += time.perf_counter() - started
        points += len(batch)
    progress.save(number + 1, points)
    return upsert_s


async def measure(
    store: EdgeStore,
    searcher: HybridSearcher,
    progress: Progress,
    size: int,
    rss_start: float,
) -> dict[str, Any]:
    """Grow the synthetic collection to size, index what is left, measure."""
    base = list(load_base(store).values())
    everything = [p for points in base for p in points]
    before = progress.points
    upsert_s = await grow(store, progress, size, base, everything)
    started = time.perf_counter()
    await store.optimize(SCALE)
    index_s = time.perf_counter() - started
    timings = await time_searches(
        searcher, load_questions(), load_settings(ChainSettings).top_k, rounds=2
    )
    added = progress.points - before
    return {
        "chunks": progress.points,
        **timings,
        "upsert_per_s": round(added / upsert_s) if upsert_s else None,
        "index_s": round(index_s, 1),
        "rss_mb": rss_mb(),
        # Of which the process's own memory; the rest is mapped segment files the kernel
        # may drop (page cache).
        "rss_anon_mb": rss_mb("RssAnon"),
        # This process before it opened the synthetic collection: the models, the real one.
        "rss_start_mb": rss_start,
        "rss_peak_mb": rss_mb("VmHWM"),
        "disk_mb": disk_mb(store_folder(store) / SCALE),
        "segments": store._open(SCALE).info().segments_count,
        "load": round(os.getloadavg()[0], 1),
    }


def store_folder(store: EdgeStore) -> Path:
    """The folder an Edge store keeps its collections in."""
    return store._root


async def run(work: Path, max_chunks: int) -> None:
    """Build the base collection once, then grow the synthetic one size by size, printing one
    JSON line per size."""
    embedders = DenseEmbedders(load_settings(EmbeddingSettings))
    sparse = SparseEmbedder()
    store = EdgeStore(work / "qdrant")
    try:
        ingestor = Ingestor(store, embedders, sparse, load_settings(IngestionSettings))
        await ingestor.ingest(discover([SHARED / "corpus"]), BASE, "en")
        base_spec = await store.get_collection(BASE)
        assert base_spec is not None
        searcher = HybridSearcher(store, embedders, sparse, load_settings(SearchSettings))
        await searcher.search("warm-up: loads the model", [BASE])
        rss_start = rss_mb()
        await store.ensure_collection(dataclasses.replace(base_spec, name=SCALE))
        progress = Progress(work / "scale-progress.json")
        # What the store holds is the truth (an interrupted batch may or may not be in it).
        progress.points = store._open(SCALE).info().points_count
        # Sizes a resumed run has passed cannot be measured again: the current one is.
        sizes = sorted({s for s in SIZES if s <= max_chunks} | {max_chunks})
        for size in [s for s in sizes if s >= progress.points] or [progress.points]:
            print_result(await measure(store, searcher, progress, size, rss_start))
    finally:
        await store.close()


def main() -> None:
    """Parse arguments, run, print one JSON line per size (the largest last)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-chunks", type=int, default=SIZES[-1])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("data/bench-scale"),
        help="where the store is kept between runs (a rerun continues the synthetic collection)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.work, args.max_chunks))


if __name__ == "__main__":
    main()
