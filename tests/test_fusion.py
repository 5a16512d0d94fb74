"""The score fusion of hybrid search, on hand-made candidates."""

import math

from kb.schema import Candidate
from kb.search import fuse
from kb.settings import SearchSettings


def settings(dense_weight: float = 0.9, document_weight: float = 1.0) -> SearchSettings:
    return SearchSettings(candidates=50, dense_weight=dense_weight, document_weight=document_weight)


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
