"""Shared fixtures: the real embedders (the dense model is loaded once per session), a fresh
embedded Qdrant store per test, and a builder of Ingestors with small chunks."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic_settings import BaseSettings

from app.prompts import load_prompt_files
from ingestion.pipeline import Ingestor, discover
from ingestion.settings import IngestionSettings
from kb.dense_st import MINILM_MODEL_NAME, SentenceTransformerEmbedder
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import EmbeddingSettings, SearchSettings
from kb.store import VectorStore

# Small chunks, so a few paragraphs already make several of them.
SMALL_CHUNKS: dict[str, Any] = {
    "chunk_tokens": 64,
    "chunk_overlap_tokens": 16,
    "embed_group_chunks": 512,
}

_S = TypeVar("_S", bound=BaseSettings)
IngestorFactory = Callable[..., Ingestor]
FileWriter = Callable[[Path, dict[str, str | bytes]], Path]


def without_env(cls: type[_S], **values: Any) -> _S:
    """Settings from the code's defaults and values only: every field is given explicitly, so
    no variable of the environment (or .env) running the tests can leak in."""
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in cls.model_fields.items()
    }
    return cls.model_validate({**defaults, **values})


def ingestion_settings(**overrides: Any) -> IngestionSettings:
    """IngestionSettings with small chunks."""
    return without_env(IngestionSettings, **{**SMALL_CHUNKS, **overrides})


@pytest.fixture(scope="session")
def dense_embedder() -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once (about 8 s)."""
    return SentenceTransformerEmbedder(without_env(EmbeddingSettings), MINILM_MODEL_NAME)


@pytest.fixture(scope="session")
def sparse_embedder() -> SparseEmbedder:
    """BM25 per language (cheap, stateless apart from its stemmer cache)."""
    return SparseEmbedder()


@pytest.fixture(scope="session")
def search_settings() -> SearchSettings:
    """The default fusion weights, whatever SEARCH_* says."""
    return without_env(SearchSettings)


@pytest.fixture
async def edge_store(tmp_path: Path) -> AsyncIterator[EdgeStore]:
    """A fresh embedded store under the test's own folder, closed (and unlocked) at teardown."""
    store = EdgeStore(tmp_path / "qdrant")
    yield store
    await store.close()


@pytest.fixture(scope="session")
def make_ingestor(
    dense_embedder: DenseEmbedder, sparse_embedder: SparseEmbedder
) -> IngestorFactory:
    """Build an Ingestor on a store, with small-chunk settings (keyword overrides allowed)."""

    def build(store: VectorStore, **overrides: Any) -> Ingestor:
        return Ingestor(
            store,
            DenseEmbedders.of(dense_embedder),
            sparse_embedder,
            ingestion_settings(**overrides),
        )

    return build


def _write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def write_files() -> FileWriter:
    """write_files(root, {"sub/x.md": "text", "y.pdf": b"..."}): create them; returns root."""
    return _write_files


ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
# The prompt files as the chain uses them.
PROMPTS = load_prompt_files(ROOT / "prompts")


@pytest.fixture(scope="session")
async def sample_store(
    tmp_path_factory: pytest.TempPathFactory, make_ingestor: IngestorFactory
) -> AsyncIterator[EdgeStore]:
    """The sample documents, chunked as users get them: the English ones (samples/en) in
    collection "company", the Russian ones (samples/ru) in "company-ru"; shared by the
    chain, tracing and HTTP tests, which only read it."""
    store = EdgeStore(tmp_path_factory.mktemp("samples") / "qdrant")
    ingestor = make_ingestor(store, chunk_tokens=None, chunk_overlap_tokens=32)
    report = await ingestor.ingest(discover([SAMPLES / "en"]), "company")
    assert report.count("failed") == 0
    report = await ingestor.ingest(discover([SAMPLES / "ru"]), "company-ru", "ru")
    assert report.count("failed") == 0
    yield store
    await store.close()


@pytest.fixture
def sample_searcher(
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> HybridSearcher:
    """Hybrid search over the sample store (its .store) with the session's embedders."""
    dense = DenseEmbedders.of(dense_embedder)
    return HybridSearcher(sample_store, dense, sparse_embedder, search_settings)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server (Debian's package) on a free local port, without persistence,
    stopped after the test; the test is skipped where redis-server is not installed, except in
    CI (KB_REQUIRE_SERVERS=1, set by .ci/run after installing it), where that fails."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing = "redis-server is not installed (scripts/install-debian redis-server redis-server)"
        if os.environ.get("KB_REQUIRE_SERVERS"):
            pytest.fail(missing)
        pytest.skip(missing)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)
