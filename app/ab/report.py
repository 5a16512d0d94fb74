"""`python -m app prompts report`: per prompt and variant, the users' feedback on the answers
it wrote and the eval runs that measured it, read through Langfuse's public API (and from
eval result files), so support staff can tell whether a variant does better."""

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from langfuse import Langfuse

from app.ab.pin import parse_variants_text
from app.ab.variants import parse_tag
from app.errors import AppError

# The score the bot records for 👍/👎 (app/bot/handlers/feedback.py: SCORE).
FEEDBACK_SCORE = "user_feedback"
# The chain's root observation (app/chain/chain.py) and the user id of eval runs
# (app/eval/runner.py): the answers users got are the "question" traces of other users.
_ROOT = "question"
_EVAL_USER = "eval"
# Eval metrics shown per variant (a run's scores or an --out file's summary).
METRICS = ("outcome_accuracy", "fact_recall", "citation_precision", "hit@5", "mrr@10")
_PAGE = 100


class ReportError(AppError):
    """The report cannot be made (no source to read, or an unreadable results file)."""


@dataclass(frozen=True, slots=True)
class EvalRun:
    """One eval run: where it is recorded, which label of each prompt it served, its metrics."""

    source: str
    variants: dict[str, str]
    metrics: dict[str, float]


@dataclass(slots=True)
class VariantStats:
    """What is known of one variant of one prompt."""

    prompt: str
    label: str
    answers: int = 0
    rated: int = 0
    positive: int = 0
    runs: list[EvalRun] = field(default_factory=list)

    @property
    def share(self) -> float | None:
        """The share of ratings that were 👍."""
        return self.positive / self.rated if self.rated else None

    def interval(self) -> tuple[float, float] | None:
        """The Wilson 95% interval of the share: how far apart two variants must be."""
        if not self.rated:
            return None
        n, p, z = self.rated, self.positive / self.rated, 1.96
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return round(max(0.0, centre - spread), 3), round(min(1.0, centre + spread), 3)

    def metrics(self) -> dict[str, float]:
        """Each eval metric's mean over the runs that measured this variant."""
        means = {}
        for name in METRICS:
            values = [r.metrics[name] for r in self.runs if name in r.metrics]
            if values:
                means[name] = round(sum(values) / len(values), 3)
        return means

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        share, ci = self.share, self.interval()
        return {
            "prompt": self.prompt,
            "variant": self.label,
            "answers": self.answers,
            "rated": self.rated,
            "positive": self.positive,
            "share": None if share is None else round(share, 3),
            "ci95": None if ci is None else list(ci),
            "eval_runs": len(self.runs),
            "metrics": self.metrics(),
        }


def _pages(fetch: Any, **query: Any) -> Iterator[Any]:
    """Every row of a cursor-paged list of the public API."""
    cursor = None
    while True:
        page = fetch(cursor=cursor, limit=_PAGE, **query)
        yield from page.data
        cursor = page.meta.cursor
        if not cursor:
            return


def served_variants(langfuse: Langfuse, since: datetime) -> dict[str, dict[str, str]]:
    """The variants each user-facing chain run served, by trace id (from its tags)."""
    served: dict[str, dict[str, str]] = {}
    for observation in _pages(
        langfuse.api.observations.get_many,
        name=_ROOT,
        fields="core,basic,trace_context",
        from_start_time=since,
    ):
        if observation.user_id == _EVAL_USER or not observation.trace_id:
            continue
        pairs = [p for p in map(parse_tag, observation.tags or ()) if p is not None]
        if pairs:
            served.setdefault(observation.trace_id, {}).update(pairs)
    return served


def feedback(langfuse: Langfuse, since: datetime, score: str) -> Iterator[tuple[str, bool]]:
    """(trace id, thumbs up) of every feedback score on a trace."""
    for row in _pages(
        langfuse.api.scores.get_many, name=score, fields="subject", from_timestamp=since
    ):
        subject = row.subject
        if subject is None or subject.kind != "trace":
            continue
        yield subject.id, float(row.value) >= 0.5


def langfuse_runs(langfuse: Langfuse, since: datetime) -> Iterator[EvalRun]:
    """The eval runs recorded as Langfuse experiments (those that say what they served)."""
    for experiment in _pages(
        langfuse.api.experiments.list, fields="core,metadata,scores", from_start_time=since
    ):
        variants = parse_variants_text(str((experiment.metadata or {}).get("prompt_variants", "")))
        if not variants:
            continue  # not a `python -m app eval` run, or one from before prompt A/B
        metrics = {
            s.name: float(s.value)
            for s in experiment.scores or ()
            if isinstance(s.value, int | float) and not isinstance(s.value, bool)
        }
        yield EvalRun(f"langfuse:{experiment.name}", variants, metrics)


def file_run(path: Path) -> EvalRun:
    """An eval run from its --out file (the summary is its last line)."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        summary = json.loads(lines[-1]) if lines else None
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read eval results {path}: {exc}") from None
    if not isinstance(summary, dict) or "items" not in summary:
        raise ReportError(f"{path}: the last line is not an eval summary")
    variants = parse_variants_text(str(summary.get("prompt_variants", "")))
    if not variants:
        raise ReportError(f"{path}: the run does not say which prompt variants it ran")
    metrics = {
        k: float(v) for k, v in summary.items() if k in METRICS and isinstance(v, int | float)
    }
    return EvalRun(f"file:{path.name}", variants, metrics)


def aggregate(
    served: Mapping[str, Mapping[str, str]],
    ratings: Sequence[tuple[str, bool]],
    runs: Sequence[EvalRun],
    default_label: str,
) -> list[VariantStats]:
    """Per prompt and variant: answers served, ratings, and the eval runs of that variant. A
    run counts for each prompt it served a non-default label of; a run of the defaults only
    counts for the default of the prompts that have variants."""
    stats: dict[tuple[str, str], VariantStats] = {}

    def of(prompt: str, label: str) -> VariantStats:
        return stats.setdefault((prompt, label), VariantStats(prompt, label))

    for variants in served.values():
        for prompt, label in variants.items():
            of(prompt, label).answers += 1
    for trace_id, up in ratings:
        for prompt, label in served.get(trace_id, {}).items():
            entry = of(prompt, label)
            entry.rated += 1
            entry.positive += up
    for run in runs:
        changed = {p: lbl for p, lbl in run.variants.items() if lbl != default_label}
        for prompt, label in changed.items():
            of(prompt, label).runs.append(run)
    under_test = {prompt for prompt, _ in stats}
    for run in runs:
        if all(label == default_label for label in run.variants.values()):
            for prompt in sorted(under_test & set(run.variants)):
                of(prompt, default_label).runs.append(run)
    return [stats[key] for key in sorted(stats)]


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(rows: Sequence[VariantStats], out: TextIO) -> None:
    """One line per prompt and variant: answers, ratings, share of 👍 (95% interval), eval runs
    and their mean metrics."""
    if not rows:
        print("no prompt variants seen yet (PROMPT_VARIANTS, eval --prompt-label)", file=out)
        return
    heads = ("prompt", "variant", "answers", "rated", "👍 share (95%)", "evals", *METRICS)
    table: list[tuple[str, ...]] = [heads]
    for row in rows:
        ci = row.interval()
        share = _cell(row.share, 2) + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
        metrics = row.metrics()
        table.append(
            (
                row.prompt,
                row.label,
                str(row.answers),
                str(row.rated),
                share,
                str(len(row.runs)),
                *(_cell(metrics.get(name)) for name in METRICS),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(heads))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)


def report(
    langfuse: Langfuse | None,
    results: Sequence[Path],
    *,
    since: datetime,
    default_label: str,
    score: str = FEEDBACK_SCORE,
) -> list[VariantStats]:
    """Read feedback and eval runs (Langfuse when given, then the result files) and aggregate
    them per prompt and variant. Blocking: run it off the event loop."""
    if langfuse is None and not results:
        raise ReportError(
            "nothing to read: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY, or give "
            "--results FILE (an `eval --out` file)"
        )
    runs = [file_run(path) for path in results]
    served: dict[str, dict[str, str]] = {}
    ratings: list[tuple[str, bool]] = []
    if langfuse is not None:
        served = served_variants(langfuse, since)
        ratings = list(feedback(langfuse, since, score))
        runs = [*langfuse_runs(langfuse, since), *runs]
    return aggregate(served, ratings, runs, default_label)
