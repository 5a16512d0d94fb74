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
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.settings import EmbeddingSettings, load_settings


@dataclass
class Bench:
    """What a benchmark works with."""

    store: EdgeStore
    # The models from the settings, and the one that embeds the bench's language.
    embedders: DenseEmbedders
    dense: DenseEmbedder
    sparse: SparseEmbedder
    ingestor: Ingestor


@asynccontextmanager
async def fresh_bench(language: str = "en", model: str | None = None) -> AsyncIterator[Bench]:
    """Embedders from the usual settings (or one model for every language) over an empty Edge
    store that is removed afterwards."""
    settings = load_settings(EmbeddingSettings)
    if model:
        settings = settings.model_copy(update={"model": model, "model_en": "", "model_ru": ""})
    embedders = DenseEmbedders(settings)
    dense = embedders.for_language(language)
    sparse = SparseEmbedder()
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        store = EdgeStore(Path(tmp) / "qdrant")
        try:
            ingestor = Ingestor(store, embedders, sparse, load_settings(IngestionSettings))
            yield Bench(store, embedders, dense, sparse, ingestor)
        finally:
            await store.close()


def print_result(result: Mapping[str, Any]) -> None:
    """The benchmark's result: one JSON object on the last line."""
    print(json.dumps(result))
