"""`python -m app eval --candidate [NAME ...]`: the golden set against the live version and
the staged candidate of knowledge bases side by side, with the baseline gate between them
(live is the baseline); `python -m ingestion release --require-eval` runs it."""

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO, cast

from app.eval.golden import GoldenError, GoldenItem, dataset_items, from_dataset_item, read_golden
from app.eval.judge import Judge, JudgeSettings
from app.eval.metrics import JUDGED, SHARES, ItemResult, summarize
from app.eval.report import candidate_verdict, worse_items
from app.eval.runner import Evaluator, eval_chain
from app.factory import Services
from kb.search import HybridSearcher
from kb.settings import load_settings
from kb.store import VectorStore, VersionedStore
from kb.versions import StagedStore, Versions

EXIT_OK, EXIT_WORSE = 0, 1


def _versioned(store: VectorStore) -> VersionedStore:
    # build_services opens the store with kb.factory.open_store: both adapters have versions.
    if not hasattr(store, "stage"):
        raise GoldenError("this store keeps no versions of its collections")
    return cast(VersionedStore, store)


async def staged_collections(store: VersionedStore, names: Sequence[str]) -> dict[str, Versions]:
    """The versions of the named collections (every one with a candidate when none are
    named); GoldenError when a named one has no candidate, or none has."""
    found: dict[str, Versions] = {}
    for name in names or await store.list_collections():
        versions = await store.versions(name)
        if versions is not None and versions.candidate is not None:
            found[name] = versions
        elif names:
            raise GoldenError(
                f"collection {name!r} has no staged candidate: stage one with "
                f"`python -m ingestion add PATH --collection {name} --stage`"
            )
    if not found:
        raise GoldenError("no collection has a staged candidate")
    return found


async def _items(
    args: argparse.Namespace, services: Services, staged: Mapping[str, Versions]
) -> list[GoldenItem]:
    """The golden items that read a staged collection (the others would give the same
    result twice), then --limit of them."""
    from app.eval.command import spread

    if args.golden is not None:
        items = read_golden(args.golden)
    else:
        langfuse = services.tracer.langfuse
        assert langfuse is not None  # checked before the services were built
        found = await asyncio.to_thread(dataset_items, langfuse, args.dataset)
        items = [from_dataset_item(item) for item in found]
    reading = [i for i in items if set(args.collection or i.collections) & set(staged)]
    if not reading:
        raise GoldenError(f"no golden item reads {', '.join(sorted(staged))}: nothing to compare")
    return spread(reading, args.limit, lambda item: item.kind)


def _evaluator(
    args: argparse.Namespace,
    services: Services,
    store: VectorStore,
    judge: Judge | None,
    concurrency: int,
) -> Evaluator:
    searcher = services.searcher
    if store is not services.store:
        # Its own searcher: the searcher keeps each collection's spec once read.
        searcher = HybridSearcher(store, searcher.dense, searcher.sparse, searcher.settings)
    chain = eval_chain(
        searcher=searcher,
        store=store,
        llm=services.llm,
        prompts=services.prompts,
        tracer=services.tracer,
        settings=services.settings.chain,
    )
    return Evaluator(
        chain,
        collections=args.collection,
        grader=judge,
        concurrency=concurrency,
        progress=not args.json,
    )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_side_by_side(
    live: Sequence[ItemResult],
    candidate: Sequence[ItemResult],
    summaries: tuple[Mapping[str, Any], Mapping[str, Any]],
    out: TextIO,
) -> None:
    """Per item: the kind each version got, facts and hit@5 on each (a '<' where the
    candidate did worse); then each metric on both."""
    width = max([len(r.id) for r in live] + [4])
    head = f"{'item':<{width}}  {'expected':<9} {'live':<9} {'candidate':<10} facts      hit@5"
    print(head, file=out)
    for old, new in zip(live, candidate, strict=True):
        worse = (old.outcome and not new.outcome) or (new.fact_recall or 0) < (old.fact_recall or 0)
        print(
            f"{old.id:<{width}}{'<' if worse else ' '} {old.expected:<9} {old.got:<9} "
            f"{new.got:<10} {_cell(old.fact_recall)}/{_cell(new.fact_recall)}  "
            f"{_cell(old.hit_at_5)}/{_cell(new.hit_at_5)}",
            file=out,
        )
    print(file=out)
    print(f"{'metric':<20} {'live':>9} {'candidate':>9}", file=out)
    for name in (*SHARES, *JUDGED, "unsupported", "p50_ms", "errors"):
        before, after = (summary.get(name) for summary in summaries)
        if before is not None or after is not None:
            print(f"{name:<20} {before!s:>9} {after!s:>9}", file=out)


async def compare_candidate(args: argparse.Namespace, services: Services) -> dict[str, Any]:
    """Both versions through the chain; the report: each version's summary, the staged
    versions, the metrics and the items that got worse."""
    store = _versioned(services.store)
    staged = await staged_collections(store, args.candidate)
    items = await _items(args, services, staged)
    judge = Judge(load_settings(JudgeSettings).client(), services.tracer) if args.judge else None
    from app.eval.command import default_concurrency

    concurrency = max(1, args.concurrency or default_concurrency(services))
    try:
        live = await _evaluator(args, services, store, judge, concurrency).run(items)
        view = StagedStore(store, list(staged))
        candidate = await _evaluator(args, services, view, judge, concurrency).run(items)
    finally:
        if judge is not None:
            await judge.llm.aclose()
    before, after = summarize(live), summarize(candidate)
    worse = candidate_verdict(
        live,
        candidate,
        tolerance=args.tolerance,
        max_unsupported=args.max_new_unsupported,
        max_lost=args.max_lost,
    )
    if not args.json:
        print_side_by_side(live, candidate, (before, after), sys.stdout)
    return {
        "collections": {name: v.to_dict() for name, v in staged.items()},
        "live": before,
        "candidate": after,
        "worse": worse,
        "worse_items": worse_items(candidate, {r.id: r for r in live}),
    }
