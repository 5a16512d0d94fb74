"""Embedders: the bundled dense model's vectors are pinned, prefixes applied, BM25 stems per
language, and a document's vector is the normalized mean of its chunks'."""

import numpy as np
import pytest

from kb.dense_st import MINILM_MODEL_NAME, SentenceTransformerEmbedder
from kb.embedder import DenseEmbedder, SparseEmbedder, document_vector

pytestmark = pytest.mark.slow

FOX = "The quick brown fox jumps over the lazy dog."
# First components of all-MiniLM-L6-v2's normalized vector for FOX (computed once, pinned).
FOX_HEAD = [
    0.0439336,
    0.0589344,
    0.0481784,
    0.0775481,
    0.0267444,
    -0.0376296,
    -0.0026051,
    -0.059943,
]


def test_bundled_model_vector_is_pinned(dense_embedder: DenseEmbedder) -> None:
    assert dense_embedder.model_name == MINILM_MODEL_NAME
    assert dense_embedder.dimension == 384

    query = np.asarray(dense_embedder.embed_query(FOX))
    [passage] = dense_embedder.embed_passages([FOX])

    assert query.shape == (384,)
    assert np.allclose(query[:8], FOX_HEAD, atol=1e-4)
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)
    # Without prefixes a query and a passage of the same text are the same vector.
    assert np.allclose(query, passage, atol=1e-5)
    assert dense_embedder.embed_passages([]) == []


def test_vectors_carry_meaning(dense_embedder: DenseEmbedder) -> None:
    query = np.asarray(dense_embedder.embed_query("How many vacation days do I get?"))
    leave, printer = np.asarray(
        dense_embedder.embed_passages(
            [
                "Every employee gets twenty-eight days of paid leave per year.",
                "The printer on the third floor needs a new toner cartridge.",
            ]
        )
    )
    assert float(query @ leave) > float(query @ printer) + 0.2


def test_query_and_passage_prefixes_are_applied(
    dense_embedder: SentenceTransformerEmbedder,
) -> None:
    settings = dense_embedder.settings.model_copy(
        update={"query_prefix": "query: ", "passage_prefix": "passage: "}
    )
    prefixed = SentenceTransformerEmbedder(settings, MINILM_MODEL_NAME)
    text = "reset a forgotten password"

    plain_query = np.asarray(dense_embedder.embed_query(text))
    prefixed_query = np.asarray(prefixed.embed_query(text))
    prefixed_passage = np.asarray(prefixed.embed_passages([text])[0])

    assert not np.allclose(plain_query, prefixed_query, atol=1e-3)
    assert not np.allclose(prefixed_query, prefixed_passage, atol=1e-3)
    # The prefix is exactly prepended to the text, for each side.
    [with_query_prefix, with_passage_prefix] = dense_embedder.embed_passages(
        ["query: " + text, "passage: " + text]
    )
    assert np.allclose(prefixed_query, with_query_prefix, atol=1e-5)
    assert np.allclose(prefixed_passage, with_passage_prefix, atol=1e-5)


def test_count_tokens_counts_word_pieces_without_special_tokens(
    dense_embedder: DenseEmbedder,
) -> None:
    assert dense_embedder.count_tokens("") == 0
    assert dense_embedder.count_tokens(FOX) == 10  # nine words and the full stop
    # Rare words are several pieces: more tokens than words.
    assert dense_embedder.count_tokens("unbelievably tokenization") > 2
    # Counts add up over whitespace joins, which the chunker relies on.
    first, second = "Paid leave: twenty-eight days.", "Übermäßig lange Wörter, e.g. naïve."
    joined = dense_embedder.count_tokens(f"{first}\n\n{second}")
    assert joined == dense_embedder.count_tokens(first) + dense_embedder.count_tokens(second)
    # Longer than the model's window is still counted, not cut.
    assert dense_embedder.count_tokens("word " * 1000) == 1000
    assert dense_embedder.max_tokens == 256


def test_bm25_stems_russian_inflections_only_with_russian(sparse_embedder: SparseEmbedder) -> None:
    passage = "Оформление отпуска через портал"
    query = "отпуском"

    [ru_passage] = sparse_embedder.embed_passages([passage], "ru")
    ru_query = sparse_embedder.embed_query(query, "ru")
    assert ru_query.indices
    assert set(ru_query.indices) <= set(ru_passage.indices)

    [en_passage] = sparse_embedder.embed_passages([passage], "en")
    en_query = sparse_embedder.embed_query(query, "en")
    assert not set(en_query.indices) & set(en_passage.indices)


def test_bm25_stems_english_and_drops_stopwords(sparse_embedder: SparseEmbedder) -> None:
    [passage] = sparse_embedder.embed_passages(["He runs every morning"], "en")
    assert set(sparse_embedder.embed_query("running", "en").indices) <= set(passage.indices)
    assert sparse_embedder.embed_query("the and of", "en").indices == []
    # Query terms weigh 1; passage weights are BM25 term weights, one per index.
    query = sparse_embedder.embed_query("morning run", "en")
    assert query.values == [1.0, 1.0]
    assert len(passage.values) == len(passage.indices)
    assert all(v > 0 for v in passage.values)


def test_unsupported_bm25_language_is_refused(sparse_embedder: SparseEmbedder) -> None:
    with pytest.raises(ValueError, match=r"unsupported BM25 language 'fr'.*'en', 'ru'"):
        sparse_embedder.embed_query("bonjour", "fr")
    with pytest.raises(ValueError, match="unsupported BM25 language"):
        sparse_embedder.embed_passages(["bonjour"], "de")


def test_document_vector_is_the_normalized_mean() -> None:
    assert np.allclose(document_vector([[1.0, 0.0], [0.0, 1.0]]), [0.5**0.5, 0.5**0.5])
    assert np.allclose(document_vector([[0.0, 3.0]]), [0.0, 1.0])
    # Opposite vectors: a zero mean stays zero instead of becoming NaN.
    assert document_vector([[1.0, 0.0], [-1.0, 0.0]]) == [0.0, 0.0]


def test_document_vector_of_real_chunks(dense_embedder: DenseEmbedder) -> None:
    chunks = dense_embedder.embed_passages(["Paid leave rules.", "Booking leave in the portal."])
    doc = np.asarray(document_vector(chunks))
    mean = np.mean(chunks, axis=0)
    assert np.linalg.norm(doc) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(doc, mean / np.linalg.norm(mean), atol=1e-6)
