"""Shared set-up of the benchmarks: a fresh embedded store in a temporary folder."""

import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestion.pipeline import Ingestor
from ingestion.settings import IngestionSettings
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, SparseEmbedder
from kb.settings import EmbeddingSettings, load_settings


@dataclass
class Bench:
    """What a benchmark works with."""

    store: EdgeStore
    dense: DenseEmbedder
    sparse: SparseEmbedder
    ingestor: Ingestor


@asynccontextmanager
async def fresh_bench() -> AsyncIterator[Bench]:
    """Embedders from the usual settings over an empty Edge store that is removed afterwards."""
    dense = DenseEmbedder(load_settings(EmbeddingSettings))
    sparse = SparseEmbedder()
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        store = EdgeStore(Path(tmp) / "qdrant")
        try:
            ingestor = Ingestor(store, dense, sparse, load_settings(IngestionSettings))
            yield Bench(store, dense, sparse, ingestor)
        finally:
            await store.close()


def print_result(result: Mapping[str, Any]) -> None:
    """The benchmark's result: one JSON object on the last line."""
    print(json.dumps(result))
