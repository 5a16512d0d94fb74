"""The eval's output: a table per item and in total, the summary JSON line, the per-item
file, and the comparison with a baseline run that gates a change."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from app.eval.golden import GoldenError
from app.eval.metrics import JUDGED, KINDS, SHARES, ItemResult, summarize


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: Sequence[ItemResult], summary: Mapping[str, Any], out: TextIO) -> None:
    """Per item: expected and actual kind, retrieval, citations, facts, grounding, time; then
    the confusion table and the totals."""
    width = max([len(r.id) for r in rows] + [4])
    head = f"{'item':<{width}}  {'expected':<9} {'got':<9} hit@5 rr@10 cites facts unsup    ms"
    print(head, file=out)
    for r in rows:
        mark = " " if r.outcome else "!"
        print(
            f"{r.id:<{width}}{mark} {r.expected:<9} {r.got:<9} {_cell(r.hit_at_5, 0):>5} "
            f"{_cell(r.rr_at_10):>5} {_cell(r.citation_precision):>5} "
            f"{_cell(r.fact_recall):>5} {r.unsupported:>5} {r.timings.get('total', 0):>6.0f}",
            file=out,
        )
    print(file=out)
    print("expected \\ got  " + " ".join(f"{k:>9}" for k in KINDS), file=out)
    for kind, counts in summary["confusion"].items():
        print(f"{kind:<15} " + " ".join(f"{counts.get(k, 0):>9}" for k in KINDS), file=out)
    print(file=out)
    for name in (*SHARES, *JUDGED, "unsupported", "p50_ms", "errors"):
        if summary.get(name) is not None:
            print(f"{name:<20} {summary[name]}", file=out)
    steps = ", ".join(f"{k} {v:.0f}" for k, v in summary["p50_step_ms"].items())
    print(f"{'p50 per step (ms)':<20} {steps}", file=out)
    tokens = summary["tokens"]
    print(f"{'tokens':<20} prompt {tokens['prompt']}, completion {tokens['completion']}", file=out)


def write_results(path: Path, rows: Sequence[ItemResult], summary: Mapping[str, Any]) -> None:
    """One line per item, then the summary line (a later --baseline reads both)."""
    lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in rows]
    lines.append(json.dumps(summary, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Baseline:
    """An earlier run: its summary, and its items when it was written with --out."""

    summary: dict[str, Any]
    items: dict[str, ItemResult]


def read_baseline(path: Path) -> Baseline:
    """A --out file, or a file whose last line is a run's JSON summary."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        records = [json.loads(line) for line in lines]
    except (OSError, json.JSONDecodeError) as exc:
        raise GoldenError(f"cannot read baseline {path}: {exc}") from None
    if not records or "items" not in records[-1]:
        raise GoldenError(f"{path}: the last line is not an eval summary")
    items = {r["id"]: ItemResult.from_dict(r) for r in records[:-1] if "id" in r}
    return Baseline(records[-1], items)


@dataclass(frozen=True, slots=True)
class Regression:
    """A metric that got worse than the baseline allows."""

    metric: str
    baseline: float
    now: float

    def __str__(self) -> str:
        return f"{self.metric}: {self.baseline} -> {self.now}"


def regressions(
    summary: Mapping[str, Any], baseline: Mapping[str, Any], tolerance: float, max_unsupported: int
) -> list[Regression]:
    """Shares that dropped by more than the tolerance; unsupported numbers and names that
    rose by more than max_unsupported."""
    found = []
    for name in (*SHARES, *JUDGED):
        before, now = baseline.get(name), summary.get(name)
        if before is not None and (now is None or now < before - tolerance):
            found.append(Regression(name, before, now if now is not None else 0.0))
    before_unsupported = baseline.get("unsupported")
    if before_unsupported is not None and summary["unsupported"] > (
        before_unsupported + max_unsupported
    ):
        found.append(Regression("unsupported", before_unsupported, summary["unsupported"]))
    return found


def lost_answers(rows: Sequence[ItemResult], baseline: Mapping[str, ItemResult]) -> list[str]:
    """Items that reached their expected outcome in the baseline and do not now."""
    return [
        row.id
        for row in rows
        if (old := baseline.get(row.id)) is not None and old.outcome and not row.outcome
    ]


def candidate_verdict(
    live: Sequence[ItemResult],
    candidate: Sequence[ItemResult],
    *,
    tolerance: float,
    max_unsupported: int,
    max_lost: int,
) -> list[str]:
    """What makes a candidate worse than live: a share dropped beyond the tolerance, more new
    unsupported terms than allowed, or more items than allowed that lost their expected
    outcome. The last counts items, not shares: on a set of 50, one question that stops
    being answered is a 0.02 drop, inside any useful tolerance, and still a lost answer."""
    worse = [
        str(r)
        for r in regressions(summarize(candidate), summarize(live), tolerance, max_unsupported)
    ]
    lost = lost_answers(candidate, {r.id: r for r in live})
    if len(lost) > max_lost:
        worse.append(f"answers lost: {len(lost)} ({', '.join(lost)}), allowed {max_lost}")
    return worse


def _less(now: float | None, before: float | None) -> bool:
    return before is not None and (now or 0.0) < before


def worse_items(rows: Sequence[ItemResult], baseline: Mapping[str, ItemResult]) -> list[str]:
    """Items that did worse than in the baseline, each with what got worse."""
    found = []
    for row in rows:
        old = baseline.get(row.id)
        if old is None:
            continue
        what = []
        if old.outcome and not row.outcome:
            what.append(f"outcome {old.got} -> {row.got}")
        if _less(row.fact_recall, old.fact_recall):
            what.append(f"facts missing: {', '.join(row.missing_facts)}")
        if _less(row.citation_precision, old.citation_precision):
            what.append(f"cites {', '.join(row.cited) or 'nothing'}")
        if _less(row.hit_at_5, old.hit_at_5) or _less(row.rr_at_10, old.rr_at_10):
            what.append(f"retrieved {', '.join(row.retrieved[:3]) or 'nothing'}")
        if row.unsupported > old.unsupported:
            what.append(f"unsupported: {', '.join(row.unsupported_terms)}")
        if what:
            found.append(f"{row.id}: {'; '.join(what)}")
    return found
