"""Queries through ONNX Runtime: used for the bundled model on CPU, identical to PyTorch,
and refused for models it cannot reproduce."""

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from kb.dense_st import MINILM_MODEL_NAME, SentenceTransformerEmbedder
from kb.onnx_query import OnnxQueryEncoder
from kb.settings import EmbeddingSettings

pytestmark = pytest.mark.slow

TEXTS = [
    "How many vacation days do I get?",
    "Как настроить VPN на ноутбуке?",
    "x",
    " ".join(["Every chunk of a long manual is embedded with its title and headings."] * 20),
]


def test_bundled_model_embeds_queries_with_onnxruntime(
    dense_embedder: SentenceTransformerEmbedder,
) -> None:
    assert dense_embedder.query_runtime == "onnxruntime"


def test_onnx_queries_equal_pytorch_queries(dense_embedder: SentenceTransformerEmbedder) -> None:
    # Every field given: init values win over the environment running the tests.
    torch_only = SentenceTransformerEmbedder(
        EmbeddingSettings(
            model="",
            device="cpu",
            batch_size=32,
            query_prefix="",
            passage_prefix="",
            max_seq_length=None,
            onnx_queries=False,
        ),
        MINILM_MODEL_NAME,
    )
    assert torch_only.query_runtime == "torch"
    for text in TEXTS:
        onnx_vector = np.asarray(dense_embedder.embed_query(text))
        torch_vector = np.asarray(torch_only.embed_query(text))
        assert np.allclose(onnx_vector, torch_vector, atol=1e-5), text
        assert np.isclose(np.linalg.norm(onnx_vector), 1.0, atol=1e-5)


def test_unsupported_pooling_keeps_pytorch(dense_embedder: SentenceTransformerEmbedder) -> None:
    transformer = dense_embedder._model[0]
    max_pooled = SentenceTransformer(modules=[transformer, Pooling(384, pooling_mode="max")])
    assert OnnxQueryEncoder.build(max_pooled, threads=1) is None
