"""Per-item metrics of one chain result against its golden item, and the run's summary.

The same numbers serve the offline report and the Langfuse experiment: `item_scores` and
`run_scores` are plain evaluator functions returning `Evaluation`s."""

import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langfuse import Evaluation

from app.chain.types import ChainResult, Passage, ResultKind
from app.eval.golden import GoldenItem
from app.eval.text import Stemmer, has_fact, unsupported

HIT_K = 5
MRR_K = 10
KINDS = ("answer", "not_found", "clarify", "error")
# The summary's shares (0..1), gated by the baseline's tolerance; higher is better.
SHARES = ("outcome_accuracy", "fact_recall", "citation_precision", "hit@5", "mrr@10")
JUDGED = ("judge_correct", "judge_faithful")


@dataclass(slots=True)
class ItemResult:
    """One golden item's run: what came back and its measures (None: not applicable)."""

    id: str
    expected: str
    got: str
    outcome: bool
    hit_at_5: float | None = None
    rr_at_10: float | None = None
    citation_precision: float | None = None
    fact_recall: float | None = None
    missing_facts: list[str] = field(default_factory=list)
    unsupported: int = 0
    unsupported_terms: list[str] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""
    trace_id: str = ""
    error: str | None = None
    judge_correct: float | None = None
    judge_faithful: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ItemResult":
        """Back from to_dict (unknown keys ignored: older or newer runs)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def ranks(expected: Sequence[str], retrieved: Sequence[str]) -> tuple[float, float]:
    """hit@5 (1 when an expected document is among the first five) and the reciprocal rank
    of the first expected one within ten (0 when none)."""
    wanted = set(expected)
    first = next((i for i, doc in enumerate(retrieved[:MRR_K], 1) if doc in wanted), None)
    if first is None:
        return 0.0, 0.0
    return float(first <= HIT_K), 1.0 / first


def _documents(passages: Sequence[Passage]) -> list[str]:
    return list(dict.fromkeys(p.doc_id for p in passages))


def measure(
    item: GoldenItem,
    result: ChainResult,
    passages: Sequence[Passage],
    stemmer: Stemmer | None = None,
) -> ItemResult:
    """The item's measures from the chain's result and the passages it retrieved."""
    got = result.kind.value
    row = ItemResult(item.id, item.kind, got, got == item.kind, text=result.text)
    row.trace_id, row.error, row.timings = result.trace_id, result.error, dict(result.timings)
    row.retrieved = _documents(passages)
    if item.documents:
        row.hit_at_5, row.rr_at_10 = ranks(item.documents, row.retrieved)
    if result.kind is ResultKind.ANSWER:
        row.cited = list(dict.fromkeys(s.doc_id for s in result.sources))
        if row.cited:
            right = sum(doc in item.documents for doc in row.cited)
            row.citation_precision = right / len(row.cited)
        cited = {(s.collection, s.doc_id) for s in result.sources}
        texts = [f"{p.title}\n{p.text}" for p in passages if (p.collection, p.doc_id) in cited]
        row.unsupported_terms = unsupported(result.text, texts)
        row.unsupported = len(row.unsupported_terms)
    if item.facts:
        shown = "\n".join([result.text, *result.options])
        row.missing_facts = [f for f in item.facts if not has_fact(shown, f, stemmer)]
        row.fact_recall = 1 - len(row.missing_facts) / len(item.facts)
    return row


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 3) if present else None


def _p50(values: Sequence[float]) -> float:
    return round(statistics.median(values), 1) if values else 0.0


def confusion(rows: Sequence[ItemResult]) -> dict[str, dict[str, int]]:
    """Counts of what came back, per expected kind."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        table[row.expected][row.got] += 1
    return {kind: {got: n for got in KINDS if (n := c[got])} for kind, c in table.items()}


def summarize(rows: Sequence[ItemResult]) -> dict[str, Any]:
    """The run's totals: shares in 0..1 (None when no item has the measure), counts, p50s."""
    steps = sorted({s for r in rows for s in r.timings} - {"total"})
    summary: dict[str, Any] = {
        "items": len(rows),
        "outcome_accuracy": _mean([float(r.outcome) for r in rows]),
        "fact_recall": _mean([r.fact_recall for r in rows]),
        "citation_precision": _mean([r.citation_precision for r in rows]),
        "unsupported": sum(r.unsupported for r in rows),
        "hit@5": _mean([r.hit_at_5 for r in rows]),
        "mrr@10": _mean([r.rr_at_10 for r in rows]),
        "p50_ms": _p50([r.timings.get("total", 0.0) for r in rows]),
        "p50_step_ms": {s: _p50([r.timings[s] for r in rows if s in r.timings]) for s in steps},
        "tokens": {
            "prompt": sum(r.prompt_tokens for r in rows),
            "completion": sum(r.completion_tokens for r in rows),
        },
        "errors": sum(r.got == "error" for r in rows),
        "confusion": confusion(rows),
    }
    for name in JUDGED:
        judged = _mean([getattr(r, name) for r in rows])
        if judged is not None:
            summary[name] = judged
    return summary


# Item measures reported as scores, by score name.
_ITEM_SCORES = {
    "outcome": "outcome",
    "hit@5": "hit_at_5",
    "rr@10": "rr_at_10",
    "citation_precision": "citation_precision",
    "fact_recall": "fact_recall",
    "unsupported": "unsupported",
    "judge_correct": "judge_correct",
    "judge_faithful": "judge_faithful",
}


def item_scores(*, output: Any, **_: Any) -> list[Evaluation]:
    """An experiment evaluator: the item's measures as scores (the task's output is an
    ItemResult as a dict)."""
    row = ItemResult.from_dict(output)
    scores = []
    for name, attribute in _ITEM_SCORES.items():
        value = getattr(row, attribute)
        if value is not None:
            comment = f"expected {row.expected}, got {row.got}" if name == "outcome" else None
            scores.append(Evaluation(name=name, value=float(value), comment=comment))
    return scores


def run_scores(*, item_results: Sequence[Any], **_: Any) -> list[Evaluation]:
    """An experiment run evaluator: the summary's metrics as run-level scores."""
    summary = summarize([ItemResult.from_dict(r.output) for r in item_results])
    names = (*SHARES, *JUDGED, "unsupported", "p50_ms")
    return [
        Evaluation(name=name, value=float(summary[name]))
        for name in names
        if summary.get(name) is not None
    ]
