"""A child process for the crash tests: ingests with the real pipeline and the real embedded
store, and kills itself with SIGKILL at the n-th write boundary (before or after each call that
changes the disk), as a power cut would. Prints DONE when it finished without being killed.

    python -m tests.crash_child STORE COLLECTION CHUNK_TOKENS KILL_AT FILE...
"""

import asyncio
import hashlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingestion.pipeline import Ingestor, discover
from ingestion.settings import IngestionSettings
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedders, SparseEmbedder

DIM = 32


class WordEmbedder:
    """A fast deterministic dense model (words hashed into a small space): the crash tests
    are about the store and the pipeline, not about the model."""

    backend = "test"
    model_name = "test/hashed-words"
    dimension = DIM
    max_tokens = 512
    chunk_tokens: int | None = None

    @property
    def query_runtime(self) -> str:
        return "python"

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * DIM
        for word in text.lower().split():
            vector[hashlib.blake2b(word.encode(), digest_size=2).digest()[0] % DIM] += 1.0
        norm = sum(v * v for v in vector) ** 0.5 or 1.0
        return [v / norm for v in vector]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def clear_query_cache(self) -> None:
        return None


def ingestor(store: EdgeStore, chunk_tokens: int) -> Ingestor:
    """The real pipeline with the word embedder and real BM25."""
    settings = IngestionSettings(chunk_tokens=chunk_tokens, chunk_overlap_tokens=0)
    return Ingestor(store, DenseEmbedders.of(WordEmbedder()), SparseEmbedder(), settings)


def _killing(kill_at: int) -> Callable[[], None]:
    passed = 0

    def boundary() -> None:
        nonlocal passed
        passed += 1
        if passed == kill_at:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return boundary


def _wrap(owner: Any, name: str, boundary: Callable[[], None]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        boundary()
        result = original(*args, **kwargs)
        boundary()
        return result

    setattr(owner, name, wrapped)


def main(argv: Sequence[str]) -> None:
    root, collection, chunk_tokens, kill_at, *files = argv
    boundary = _killing(int(kill_at))
    # Every call that changes the disk, in the store: specs, points, deletions, the rename that
    # publishes a new collection.
    for name in ("_write_spec", "_upsert", "_delete"):
        _wrap(EdgeStore, name, boundary)
    _wrap(os, "rename", boundary)

    async def run() -> None:
        store = EdgeStore(Path(root))
        try:
            report = await ingestor(store, int(chunk_tokens)).ingest(
                discover([Path(f) for f in files]), collection, force=True
            )
            assert not report.count("failed"), report
        finally:
            await store.close()

    asyncio.run(run())
    print("DONE")


if __name__ == "__main__":
    main(sys.argv[1:])
