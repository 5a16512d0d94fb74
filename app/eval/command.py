"""`python -m app eval`: a golden set (a file or a Langfuse dataset) through the configured
chain; a table, the summary JSON line last, and exit 1 when worse than a baseline."""

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from app.ab.pin import pin_variant, prompt_metadata
from app.eval.candidate import compare_candidate
from app.eval.golden import (
    GoldenError,
    GoldenItem,
    dataset_items,
    from_dataset_item,
    read_golden,
    upsert_dataset,
)
from app.eval.judge import Judge, JudgeSettings
from app.eval.metrics import ItemResult, summarize
from app.eval.report import (
    print_table,
    read_baseline,
    regressions,
    worse_items,
    write_results,
)
from app.eval.runner import Evaluator, eval_chain
from app.factory import Services, build_services
from app.settings import Settings
from kb.settings import load_settings

EXIT_OK, EXIT_WORSE, EXIT_USAGE = 0, 1, 2
_T = TypeVar("_T")


def add_parser(commands: Any) -> None:
    """The eval subcommand's arguments (commands: the parent's subparsers)."""
    parser = commands.add_parser("eval", help="measure answer quality on a golden set")
    parser.add_argument("--golden", type=Path, help="golden set, JSONL (one item a line)")
    parser.add_argument(
        "--dataset",
        help="Langfuse dataset: read the items from it, or with --golden upsert them into it",
    )
    parser.add_argument(
        "--collection", action="append", help="search these collections, not the items' own"
    )
    parser.add_argument(
        "--limit", type=int, help="only N items: every kind, each spread evenly over the set"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="items at a time (default: 4 on LLM servers, 1 on the embedded model)",
    )
    parser.add_argument("--judge", action="store_true", help="grade answers (EVAL_JUDGE_*)")
    parser.add_argument(
        "--candidate",
        nargs="*",
        metavar="NAME",
        help="compare live with the staged candidate of these collections (all staged ones "
        "when none are named), side by side; exit 1 when the candidate is worse",
    )
    parser.add_argument(
        "--prompt-label",
        action="append",
        metavar="[NAME=]LABEL",
        help="run a prompt variant: LABEL for every prompt that has it, or NAME=LABEL for one "
        "(default: LANGFUSE_PROMPT_LABEL, what users outside an A/B get)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--out", type=Path, help="write per-item results and the summary here")
    parser.add_argument("--baseline", type=Path, help="an earlier run's --out file (or JSON)")
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed drop of a share (0.05)"
    )
    parser.add_argument(
        "--max-new-unsupported",
        type=int,
        default=2,
        help="allowed rise of unsupported numbers and names (2)",
    )
    parser.add_argument(
        "--max-lost",
        type=int,
        default=0,
        help="with --candidate: items allowed to lose the outcome they reach on live (0)",
    )


def _golden(args: argparse.Namespace) -> list[GoldenItem] | None:
    if args.golden is None and args.dataset is None:
        raise GoldenError("give --golden FILE or --dataset NAME")
    if args.golden is None:
        return None
    return spread(read_golden(args.golden), args.limit, lambda item: item.kind)


def spread(items: list[_T], limit: int | None, kind: Callable[[_T], str]) -> list[_T]:
    """limit items, every kind among them (when limit allows) and the rest shared by the
    kinds' sizes, each kind's spread evenly over the set; all of them without a limit."""
    if not limit or limit >= len(items):
        return items
    groups: dict[str, list[_T]] = {}
    for item in items:
        groups.setdefault(kind(item), []).append(item)
    quota = dict.fromkeys(groups, 1 if limit >= len(groups) else 0)
    rest = limit - sum(quota.values())
    shares = {k: rest * len(g) / len(items) for k, g in groups.items()}
    for k in quota:
        quota[k] += int(shares[k])
    by_remainder = sorted(groups, key=lambda k: int(shares[k]) - shares[k])
    for k in by_remainder[: limit - sum(quota.values())]:
        quota[k] += 1
    chosen = {
        id(group[i * len(group) // quota[k]])
        for k, group in groups.items()
        for i in range(quota[k])
    }
    return [item for item in items if id(item) in chosen]


def default_concurrency(services: Services) -> int:
    """Items at a time when --concurrency is not given."""
    return _concurrency(services)


def _concurrency(services: Services) -> int:
    # In-process llama.cpp answers one request at a time: more items would only queue, and
    # their latencies would measure the queue.
    return 4 if all(client.parallel for client in services.llm.values()) else 1


async def _run(
    args: argparse.Namespace, services: Services, items: list[GoldenItem] | None
) -> list[ItemResult]:
    judge = None
    if args.judge:
        judge = Judge(load_settings(JudgeSettings).client(), services.tracer)
    evaluator = Evaluator(
        eval_chain(
            searcher=services.searcher,
            store=services.store,
            llm=services.llm,
            prompts=services.prompts,
            tracer=services.tracer,
            settings=services.settings.chain,
        ),
        collections=args.collection,
        grader=judge,
        concurrency=max(1, args.concurrency or _concurrency(services)),
        progress=not args.json,
        metadata=prompt_metadata(services.prompts),
    )
    try:
        langfuse = services.tracer.langfuse
        if langfuse is None:
            assert items is not None  # checked before the services were built
            return await evaluator.run(items)
        name = args.dataset or (args.golden.stem if args.golden else "golden")
        if items is not None:
            await asyncio.to_thread(upsert_dataset, langfuse, name, items)
        found = await asyncio.to_thread(dataset_items, langfuse, name)
        if items is not None:
            wanted = {item.id for item in items}
            found = [i for i in found if (i.metadata or {}).get("golden_id") in wanted]
        else:
            found = spread(found, args.limit, lambda item: from_dataset_item(item).kind)
        return await evaluator.run_experiment(langfuse, name, found)
    finally:
        if judge is not None:
            await judge.llm.aclose()


async def run_eval(args: argparse.Namespace) -> int:
    """Run, print, compare; 1 when a metric is worse than the baseline allows."""
    # Everything that can be wrong with the arguments fails before the models load.
    baseline = read_baseline(args.baseline) if args.baseline else None
    items = _golden(args)
    settings = Settings.load()
    if items is None and not settings.langfuse.enabled:
        raise GoldenError("--dataset needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY")
    if args.judge:
        load_settings(JudgeSettings).client()
    services = await build_services(settings)
    try:
        await pin_variant(services.prompts, args.prompt_label)
        if args.candidate is not None:
            return _candidate_verdict(await compare_candidate(args, services))
        rows = await _run(args, services, items)
        variant = prompt_metadata(services.prompts)
    finally:
        await services.aclose()
    summary = summarize(rows) | {"prompt_label": variant["prompt_label"]}
    summary["prompt_variants"] = variant["prompt_variants"]
    if args.out:
        write_results(args.out, rows, summary)
    if not args.json:
        print_table(rows, summary, sys.stdout)
    code = EXIT_OK
    if baseline is not None:
        worse = regressions(summary, baseline.summary, args.tolerance, args.max_new_unsupported)
        if worse:
            code = EXIT_WORSE
            print("worse than the baseline: " + "; ".join(map(str, worse)), file=sys.stderr)
            for line in worse_items(rows, baseline.items):
                print(f"  {line}", file=sys.stderr)
            if not baseline.items:
                print("  (write the baseline with --out to see which items)", file=sys.stderr)
    print(json.dumps(summary, ensure_ascii=False))
    return code


def _candidate_verdict(report: dict[str, Any]) -> int:
    """Print what got worse (stderr) and the report's JSON line; 1 when anything did."""
    if report["worse"]:
        print("candidate worse than live: " + "; ".join(report["worse"]), file=sys.stderr)
        for line in report["worse_items"]:
            print(f"  {line}", file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False))
    return EXIT_WORSE if report["worse"] else EXIT_OK
