"""The score fusion of hybrid search, on hand-made candidates."""

import math

import numpy as np

from kb.embedder import dense_spread
from kb.schema import Candidate, CollectionSpec
from kb.search import REFERENCE_SPREAD, fuse
from kb.settings import SearchSettings


def settings(dense_weight: float = 0.9, document_weight: float = 1.0) -> SearchSettings:
    return SearchSettings(candidates=50, dense_weight=dense_weight, document_weight=document_weight)


def spec(dense_spread: float | None = None, tokens_per_word: float | None = None) -> CollectionSpec:
    return CollectionSpec("c", 384, "m", dense_spread=dense_spread, tokens_per_word=tokens_per_word)


def order(candidates: list[Candidate], **weights: float) -> list[str]:
    return [point_id for point_id, _ in fuse(candidates, settings(**weights))]


def test_no_candidates_no_results() -> None:
    assert fuse([], settings()) == []


def test_weights_choose_between_meaning_and_words() -> None:
    meaning = Candidate("meaning", dense=0.8, doc=0.8, sparse=1.0)
    words = Candidate("words", dense=0.4, doc=0.4, sparse=9.0)
    assert order([meaning, words], dense_weight=1.0) == ["meaning", "words"]
    assert order([meaning, words], dense_weight=0.0) == ["words", "meaning"]


def test_bm25_is_relative_to_the_best_match_of_the_query() -> None:
    # Scaling every BM25 score (another collection's IDF, a longer query) changes nothing.
    a = [Candidate("x", 0.50, 0.50, 2.0), Candidate("y", 0.52, 0.52, 1.0)]
    b = [Candidate("x", 0.50, 0.50, 200.0), Candidate("y", 0.52, 0.52, 100.0)]
    assert fuse(a, settings()) == fuse(b, settings())
    x_score = dict(fuse(a, settings()))["x"]
    assert math.isclose(x_score, 0.9 * 0.5 + 0.1 * 1.0, rel_tol=1e-6)


def test_a_focused_document_beats_a_passage_of_an_off_topic_one() -> None:
    focused = Candidate("focused", dense=0.60, doc=0.60, sparse=0.0)
    passage = Candidate("passage", dense=0.62, doc=0.20, sparse=0.0)
    assert order([passage, focused]) == ["focused", "passage"]
    assert order([passage, focused], document_weight=0.0) == ["passage", "focused"]


def test_no_bm25_match_leaves_meaning_alone() -> None:
    # All BM25 scores 0 (no query term in the collection): no division by zero, dense decides.
    ranked = fuse([Candidate("a", 0.3, 0.3, 0.0), Candidate("b", 0.5, 0.5, 0.0)], settings())
    assert [p for p, _ in ranked] == ["b", "a"]
    assert all(math.isfinite(score) for _, score in ranked)


def test_bm25_share_follows_the_collections_dense_spread() -> None:
    # e5-like cosines: every text is 0.8-0.9 from every other, so 0.03 apart is a lot. At
    # MiniLM's spread BM25 would outvote that difference; at the measured spread it does not.
    closer = Candidate("closer", dense=0.88, doc=0.88, sparse=0.0)
    worded = Candidate("worded", dense=0.85, doc=0.85, sparse=5.0)
    assert order([closer, worded]) == ["worded", "closer"]
    ranked = fuse([closer, worded], settings(), spec(dense_spread=0.02))
    assert [p for p, _ in ranked] == ["closer", "worded"]
    # A collection without a measured spread ranks as one at the reference spread.
    reference = fuse([closer, worded], settings(), spec(dense_spread=REFERENCE_SPREAD))
    assert reference == fuse([closer, worded], settings(), spec())


def test_a_model_blind_to_the_language_only_breaks_ties() -> None:
    # MiniLM on Russian: cosines spread as usual, but they are noise; BM25 must decide.
    noise = Candidate("noise", dense=0.70, doc=0.70, sparse=1.0)
    match = Candidate("match", dense=0.45, doc=0.45, sparse=6.0)
    assert order([noise, match]) == ["noise", "match"]
    blind = fuse([noise, match], settings(), spec(tokens_per_word=4.6))
    assert [p for p, _ in blind] == ["match", "noise"]
    tie = [Candidate("far", 0.2, 0.2, 3.0), Candidate("near", 0.6, 0.6, 3.0)]
    assert [p for p, _ in fuse(tie, settings(), spec(tokens_per_word=4.6))] == ["near", "far"]
    # A model that knows the language (e5 on Russian: 2.05 tokens a word) keeps its weight.
    knows = fuse([noise, match], settings(), spec(tokens_per_word=2.05))
    assert knows == fuse([noise, match], settings(), spec())


def test_dense_spread_is_measured_between_documents() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    narrow = vectors * 0.1 + np.ones(16)
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    docs = [f"doc{i // 4}" for i in range(40)]
    wide_spread = dense_spread(vectors.tolist(), docs)
    narrow_spread = dense_spread(narrow.tolist(), docs)
    assert wide_spread is not None
    assert narrow_spread is not None
    assert narrow_spread < wide_spread / 5
    # One document (or too few pairs across documents): nothing to measure.
    assert dense_spread(vectors.tolist(), ["one"] * 40) is None
    assert dense_spread(vectors[:3].tolist(), ["a", "b", "c"]) is None
