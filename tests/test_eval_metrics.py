"""The eval's measures without a chain: facts in English and Russian, grounding, ranks, one
item's measures, the summary, the baseline gate, and golden-set files."""

import json
from pathlib import Path

import pytest

from app.chain.types import ChainResult, Passage, ResultKind, SourceRef
from app.eval.command import spread
from app.eval.golden import GoldenError, GoldenItem, read_golden
from app.eval.metrics import ItemResult, measure, ranks, summarize
from app.eval.report import (
    candidate_verdict,
    lost_answers,
    read_baseline,
    regressions,
    worse_items,
    write_results,
)
from app.eval.text import Stemmer, has_fact, unsupported

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "fact", "found"),
    [
        ("Every employee gets 25 working days of paid leave.", "25 working days", True),
        ("You get 25 days, all of them working ones.", "25 working days", True),
        ("You get 20 working days.", "25 working days", False),
        ("You get 250 working days.", "25 working days", False),
        ("Каждому положено 28 календарных дней отпуска.", "28 календарных дней", True),
        ("Нужно письменное согласие сотрудника.", "письменного согласия", True),
        ("Выплачивается помощь — 15000 ₽.", "15 000 ₽", True),
        ("Выплачивается помощь — 1500 ₽.", "15 000 ₽", False),
        ("Зелёная папка", "зеленая папка", True),
        ("Set the DNS server to 10.0.0.53.", "10.0.0.53", True),
        ("Set the DNS server to 10.0.0.5.", "10.0.0.53", False),
        ("Tell your lead before 10:00.", "10:00", True),
        ("Open https://id.example.com/reset now", "https://id.example.com/reset", True),
    ],
)
def test_facts_match_numbers_exactly_and_words_in_any_form(
    text: str, fact: str, found: bool
) -> None:
    assert has_fact(text, fact) is found


def test_without_a_stemmer_words_match_by_prefix() -> None:
    prefixes = Stemmer(None)
    assert has_fact("Нужно письменное согласие.", "письменного согласия", prefixes)
    assert not has_fact("Нужно устное согласие.", "письменного согласия", prefixes)


def test_unsupported_finds_new_numbers_and_names_not_sentence_starts() -> None:
    passages = ["You get 25 days. Call the service desk at 4357 (HELP)."]
    answer = "You get 25 days [1]. Ask Peter in Berlin, or call 4358 [1]. Call HELP."
    assert unsupported(answer, passages) == ["4358", "Peter", "Berlin"]
    russian = ["Установите Cisco Secure Client из Google Play или App Store."]
    assert unsupported("Установите Cisco Secure Client из Google Play [1].", russian) == []
    assert unsupported("Установите клиент из магазина Яндекс [1].", russian) == ["Яндекс"]


def test_ranks_are_hit_at_5_and_reciprocal_rank_within_10() -> None:
    assert ranks(["b"], ["a", "b", "c"]) == (1.0, 0.5)
    assert ranks(["f"], ["a", "b", "c", "d", "e", "f"]) == (0.0, 1 / 6)
    assert ranks(["z"], ["a", "b"]) == (0.0, 0.0)


def _passage(n: int, doc_id: str, text: str) -> Passage:
    return Passage(n, "company", doc_id, doc_id, text, doc_id, 0.9 - n / 10)


def _item(**fields: object) -> GoldenItem:
    base = {
        "id": "leave",
        "question": "How many days of leave?",
        "collections": ["company"],
        "kind": "answer",
        "documents": ["vacation.md"],
        "facts": ["25 working days", 12],
    }
    return GoldenItem.model_validate(base | fields)


def test_measure_one_answer() -> None:
    passages = (
        _passage(1, "expenses.md", "Meals: 28 EUR."),
        _passage(2, "vacation.md", "You get 25 working days."),
    )
    result = ChainResult(
        ResultKind.ANSWER,
        "You get 25 working days [2] and 30 more in Paris [1].",
        "trace",
        "q",
        "en",
        sources=[SourceRef.of(passages[1]), SourceRef.of(passages[0])],
        timings={"retrieve": 5.0, "answer": 40.0, "total": 50.0},
    )
    row = measure(_item(), result, passages)
    assert (row.outcome, row.hit_at_5, row.rr_at_10) == (True, 1.0, 0.5)
    assert row.citation_precision == 0.5
    assert (row.fact_recall, row.missing_facts) == (0.5, ["12"])
    assert row.unsupported_terms == ["30", "Paris"]
    assert row.retrieved == ["expenses.md", "vacation.md"]


def test_summary_and_confusion() -> None:
    rows = [
        ItemResult("a", "answer", "answer", True, 1.0, 1.0, 1.0, 1.0, timings={"total": 10}),
        ItemResult("b", "answer", "not_found", False, 0.0, 0.0, None, 0.0, timings={"total": 30}),
        ItemResult("c", "not_found", "not_found", True, timings={"total": 20}),
    ]
    summary = summarize(rows)
    assert summary["items"] == 3
    assert summary["outcome_accuracy"] == 0.667
    assert (summary["fact_recall"], summary["citation_precision"]) == (0.5, 1.0)
    assert (summary["hit@5"], summary["mrr@10"], summary["p50_ms"]) == (0.5, 0.5, 20.0)
    assert summary["confusion"] == {
        "answer": {"answer": 1, "not_found": 1},
        "not_found": {"not_found": 1},
    }


def test_baseline_gate_names_metrics_and_items(tmp_path: Path) -> None:
    before = [
        ItemResult("a", "answer", "answer", True, 1.0, 1.0, 1.0, 1.0),
        ItemResult("b", "answer", "answer", True, 1.0, 1.0, 1.0, 1.0),
    ]
    path = tmp_path / "base.jsonl"
    write_results(path, before, summarize(before))
    baseline = read_baseline(path)
    assert set(baseline.items) == {"a", "b"}
    now = [
        before[0],
        ItemResult(
            "b", "answer", "answer", True, 1.0, 1.0, 1.0, 0.0, missing_facts=["25"],
            unsupported=3, unsupported_terms=["20", "Paris", "Rome"],
        ),
    ]  # fmt: skip
    worse = regressions(summarize(now), baseline.summary, 0.05, 2)
    assert [w.metric for w in worse] == ["fact_recall", "unsupported"]
    assert worse_items(now, baseline.items) == [
        "b: facts missing: 25; unsupported: 20, Paris, Rome"
    ]
    assert regressions(summarize(now), baseline.summary, 0.6, 3) == []


def test_a_summary_line_alone_is_a_baseline(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"items": 2, "fact_recall": 1.0}) + "\n")
    assert read_baseline(path).summary["fact_recall"] == 1.0
    path.write_text('{"id": "a"}\n')
    with pytest.raises(GoldenError, match="not an eval summary"):
        read_baseline(path)


def test_golden_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text('{"id": "a", "question": "q", "collections": ["c"], "kind": "maybe"}\n')
    with pytest.raises(GoldenError, match=r"golden.jsonl:1"):
        read_golden(path)
    line = '{"id": "a", "question": "q", "collections": ["c"], "kind": "answer"}\n'
    path.write_text(line * 2)
    with pytest.raises(GoldenError, match="twice"):
        read_golden(path)


def test_the_shipped_samples_set_covers_every_kind_in_both_languages() -> None:
    items = read_golden(ROOT / "bench" / "golden" / "samples.jsonl")
    assert len(items) >= 30
    kinds = {(i.collections[0], i.kind) for i in items}
    assert kinds == {
        (c, k) for c in ("company", "company-ru") for k in ("answer", "not_found", "clarify")
    }
    # Every fact is in an expected document (written from the documents).
    for item in items:
        folder = ROOT / "samples" / ("en" if item.collections == ("company",) else "ru")
        text = "\n".join((folder / doc).read_text(encoding="utf-8") for doc in item.documents)
        assert all(has_fact(text, fact) for fact in item.facts), item.id


def test_limit_takes_every_kind_spread_over_the_set() -> None:
    assert spread(list(range(10)), 3, lambda _: "answer") == [0, 3, 6]
    assert spread(list(range(3)), None, str) == [0, 1, 2]
    items = read_golden(ROOT / "bench" / "golden" / "samples.jsonl")
    chosen = spread(items, 10, lambda item: item.kind)
    kinds = [item.kind for item in chosen]
    assert (kinds.count("answer"), kinds.count("not_found"), kinds.count("clarify")) == (6, 2, 2)
    assert {item.collections for item in chosen} == {("company",), ("company-ru",)}


def test_a_candidate_that_loses_one_answer_of_many_is_worse() -> None:
    """One lost answer in fifty is a 0.02 drop, inside the share tolerance: the release gate
    counts lost answers on their own."""
    live = [ItemResult(f"q{n}", "answer", "answer", True, 1.0, 1.0, 1.0, 1.0) for n in range(50)]
    candidate = [*live[:-1], ItemResult("q49", "answer", "not_found", False, 1.0, 1.0, None, 0.0)]
    shares_only = candidate_verdict(live, candidate, tolerance=0.05, max_unsupported=2, max_lost=1)
    assert shares_only == []
    strict = candidate_verdict(live, candidate, tolerance=0.05, max_unsupported=2, max_lost=0)
    assert strict == ["answers lost: 1 (q49), allowed 0"]
    assert candidate_verdict(live, live, tolerance=0.05, max_unsupported=2, max_lost=0) == []
    assert lost_answers(candidate, {r.id: r for r in live}) == ["q49"]
