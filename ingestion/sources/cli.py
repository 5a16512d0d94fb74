"""`python -m ingestion sync`: a folder into a collection, or every source the collections
file declares; once, on a schedule (--every) or on every change of the folders (--watch)."""

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchfiles import awatch

from ingestion.pipeline import Ingestor, printable
from ingestion.settings import CollectionsFileSettings, IngestionSettings
from ingestion.sources.base import Source
from ingestion.sources.config import DeclaredSource, build_source, load_sources
from ingestion.sources.folder import FolderSource
from ingestion.sources.settings import SyncSettings, parse_interval
from ingestion.sources.sync import SyncReport, sync
from kb.embedder import BM25_LANGUAGES, DenseEmbedders, SparseEmbedder
from kb.errors import ConfigurationError
from kb.settings import EmbeddingSettings, load_settings
from kb.store import VectorStore, validate_knowledge_base_name

log = logging.getLogger(__name__)
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
# `--every` given without an interval: SYNC_EVERY's.
_FROM_SETTINGS = "setting"


def add_sync_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `sync` with the ingestion CLI."""
    parser = commands.add_parser(
        "sync",
        help="sync a collection with a folder (new and changed files in, removed ones out), "
        "or every source of the collections file (--all)",
    )
    parser.add_argument("folder", nargs="?", type=Path, metavar="DIR")
    parser.add_argument("--collection", type=_collection)
    parser.add_argument(
        "--all", action="store_true", help="every source declared in COLLECTIONS_FILE"
    )
    parser.add_argument("--language", choices=sorted(BM25_LANGUAGES))
    parser.add_argument("--dry-run", action="store_true", help="show what would change")
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="let a source that lists nothing delete what was synced from it",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--every",
        nargs="?",
        const=_FROM_SETTINGS,
        metavar="INTERVAL",
        help="sync again after each interval (30s, 15m, 1h; alone: SYNC_EVERY)",
    )
    when.add_argument("--watch", action="store_true", help="sync each folder when it changes")
    parser.add_argument("--json", action="store_true", help="print a JSON summary per round")


def _collection(value: str) -> str:
    try:
        return validate_knowledge_base_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass
class Job:
    """One source synced into one collection, built once for every round."""

    collection: str
    language: str | None
    source: Source | None
    # Why the source could not be built (reported each round; nothing is touched).
    error: str = ""
    label: str = ""


def plan_jobs(args: argparse.Namespace, state_dir: Path) -> list[Job]:
    """The jobs the arguments ask for; ConfigurationError on a bad collections file."""
    if args.all:
        path = load_settings(CollectionsFileSettings).collections_file
        return [_job(d, state_dir) for d in load_sources(path)]
    return [Job(args.collection, args.language, FolderSource(args.folder))]


def _job(declared: DeclaredSource, state_dir: Path) -> Job:
    config = declared.config
    label = f"{config.kind} {getattr(config, 'path', None) or getattr(config, 'url', '')}"
    try:
        source = build_source(config, state_dir=state_dir)
    except ConfigurationError as exc:
        return Job(declared.collection, declared.language, None, str(exc), label)
    return Job(declared.collection, declared.language, source, label=source.label)


async def run_round(
    jobs: Sequence[Job], ingestor: Ingestor, *, dry_run: bool, allow_empty: bool, as_json: bool
) -> int:
    """Sync every job once and print what happened; the exit code of the round."""
    reports: list[dict[str, Any]] = []
    code = EXIT_OK
    for job in jobs:
        if job.source is None:
            print(f"error: {job.label} -> {job.collection}: {job.error}", file=sys.stderr)
            reports.append({"source": job.label, "collection": job.collection, "error": job.error})
            code = EXIT_SOME_FAILED
            continue
        report = await sync(
            job.source,
            job.collection,
            ingestor,
            language=job.language,
            dry_run=dry_run,
            allow_empty=allow_empty,
        )
        print_report(report)
        reports.append(report.summary())
        if not report.ok:
            code = EXIT_SOME_FAILED
    if as_json:
        print(json.dumps({"sources": reports}, ensure_ascii=False), flush=True)
    return code


def print_report(report: SyncReport) -> None:
    """One line per change, then the totals (stdout); the source's failure on stderr."""
    would = "would be " if report.dry_run else ""
    head = f"{report.source} -> {report.collection}"
    if report.error is not None:
        print(f"error: {head}: {report.error}; nothing was changed", file=sys.stderr)
    lines = [("added", d) for d in report.added] + [("changed", d) for d in report.changed]
    lines += [("renamed", f"{old} -> {new}") for old, new in report.renamed]
    lines += [("deleted", d) for d in report.deleted]
    for status, what in lines:
        print(f"{would}{status:<8} {printable(what)}")
    for doc_id, reason in report.failed:
        print(f"failed   {printable(doc_id)}: {reason}")
    for problem in report.problems:
        print(f"skipped  {problem}")
    if report.error is None:
        print(
            f"{head}: {would}added {len(report.added)}, changed {len(report.changed)}, "
            f"renamed {len(report.renamed)}, deleted {len(report.deleted)}; unchanged "
            f"{len(report.unchanged)}, failed {len(report.failed)} "
            f"({report.chunks_written} chunks written in {report.seconds:.1f}s)",
            flush=True,
        )


async def every(
    round_: Callable[[], Awaitable[int]], seconds: float, rounds: int | None = None
) -> int:
    """Run a round, wait, run again (forever, or `rounds` times); the last round's code."""
    code, done = EXIT_OK, 0
    while rounds is None or done < rounds:
        if done:
            await asyncio.sleep(seconds)
        code = await round_()
        done += 1
    return code


async def watch(
    folders: Sequence[Path],
    round_: Callable[[], Awaitable[int]],
    stop: asyncio.Event | None = None,
) -> int:
    """A round now, then one after each burst of changes under the folders (until stop)."""
    code = await round_()
    async for _changes in awatch(*folders, stop_event=stop, debounce=1600, step=200):
        code = await round_()
    return code


async def run_sync(args: argparse.Namespace, store: VectorStore) -> int:
    """The `sync` command (the CLI's composition root hands it the store)."""
    settings = load_settings(SyncSettings)
    try:
        interval = _interval(args, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    jobs = plan_jobs(args, settings.state_dir)
    folders = watched_folders(jobs) if args.watch else []
    if not jobs or (args.watch and not folders):
        what = "no folder to watch" if jobs else "no sources"
        print(f"the collections file declares {what}", file=sys.stderr)
        return EXIT_USAGE
    dense = DenseEmbedders(load_settings(EmbeddingSettings))
    ingestor = Ingestor(store, dense, SparseEmbedder(), load_settings(IngestionSettings))

    async def round_() -> int:
        return await run_round(
            jobs, ingestor, dry_run=args.dry_run, allow_empty=args.allow_empty, as_json=args.json
        )

    try:
        if args.watch:
            return await watch(folders, round_)
        if interval is not None:
            return await every(round_, interval)
        return await round_()
    finally:
        for job in jobs:
            if job.source is not None:
                await job.source.aclose()


def _interval(args: argparse.Namespace, settings: SyncSettings) -> float | None:
    """The --every interval in seconds (None: once, or watching); ValueError on bad usage."""
    if args.all == (args.folder is not None) or (args.folder is not None) != bool(args.collection):
        raise ValueError("usage: sync DIR --collection NAME, or sync --all")
    if args.all and (args.collection or args.language):
        raise ValueError("with --all, collections and languages come from the collections file")
    every_arg = settings.every if args.every == _FROM_SETTINGS else args.every
    return None if every_arg is None else parse_interval(every_arg)


def watched_folders(jobs: Sequence[Job]) -> list[Path]:
    """The folders --watch follows (other sources are synced with them, on each change)."""
    folders = [
        j.source.root for j in jobs if isinstance(j.source, FolderSource) and j.source.root.is_dir()
    ]
    others = [j.label for j in jobs if not isinstance(j.source, FolderSource)]
    if others:
        log.warning("--watch follows folders only; %s sync on each change", ", ".join(others))
    return folders
