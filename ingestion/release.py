"""Gated releases from the command line: `add --stage` writes into a candidate beside the live
version; `release` switches to it (after the golden set, with --require-eval), `rollback`
switches back, `discard` drops the candidate. The store does the switching (kb.versions)."""

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from kb.store import VersionedStore
from kb.versions import StagedStore, VersionError, Versions

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def add_release_parsers(commands: Any, collection_arg: Any) -> None:
    """The release, rollback and discard subcommands (commands: the parent's subparsers)."""
    release = commands.add_parser(
        "release", help="switch a collection to its staged candidate (atomically)"
    )
    release.add_argument("name", type=collection_arg, metavar="NAME")
    release.add_argument(
        "--require-eval",
        action="store_true",
        help="refuse when the candidate is worse than live on the golden set",
    )
    release.add_argument("--golden", type=Path, help="the golden set (JSONL) for --require-eval")
    release.add_argument("--dataset", help="or a Langfuse dataset (LANGFUSE_* keys)")
    release.add_argument("--limit", type=int, help="evaluate only N items, every kind among them")
    release.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed drop of a share (0.05)"
    )
    release.add_argument(
        "--max-new-unsupported",
        type=int,
        default=2,
        help="allowed rise of unsupported numbers and names (2)",
    )
    release.add_argument(
        "--max-lost",
        type=int,
        default=0,
        help="golden items allowed to lose the outcome they reach on live (0)",
    )
    rollback = commands.add_parser(
        "rollback", help="switch a collection back to its previous version"
    )
    rollback.add_argument("name", type=collection_arg, metavar="NAME")
    discard = commands.add_parser("discard", help="delete a collection's staged candidate")
    discard.add_argument("name", type=collection_arg, metavar="NAME")


def describe(versions: Versions) -> str:
    """One line: which physical version is live, staged, kept for rollback."""
    parts = [f"live {versions.live}"]
    if versions.candidate:
        parts.append(f"candidate {versions.candidate}")
    if versions.previous:
        parts.append(f"previous {versions.previous}")
    return ", ".join(parts)


async def staged(store: VersionedStore, name: str) -> StagedStore:
    """The store as `--stage` writes it: the collection's candidate (made now as a copy of
    live if there is none) under its logical name."""
    versions = await store.stage(name)
    print(f"staging into {versions.candidate} ({describe(versions)})", file=sys.stderr)
    return StagedStore(store, [name])


async def candidate_of(store: VersionedStore, name: str) -> str:
    """The physical candidate of a collection; VersionError when none is staged."""
    versions = await store.versions(name)
    if versions is None or versions.candidate is None:
        raise VersionError(
            f"collection {name!r} has no candidate to release: stage one with "
            "`python -m ingestion add PATH --collection NAME --stage`"
        )
    return versions.candidate


async def eval_gate(args: argparse.Namespace, candidate: str) -> int:
    """Run `python -m app eval --candidate NAME` (its own process: the embedded store is
    opened by one process at a time, and ingestion does not import the app); 0 when the
    candidate is not worse than live, 1 when it is."""
    if args.golden is None and args.dataset is None:
        print("error: --require-eval needs --golden FILE or --dataset NAME", file=sys.stderr)
        return EXIT_USAGE
    command = [sys.executable, "-m", "app", "eval", "--candidate", args.name]
    command += ["--golden", str(args.golden)] if args.golden else []
    command += ["--dataset", args.dataset] if args.dataset else []
    command += ["--limit", str(args.limit)] if args.limit else []
    command += ["--tolerance", str(args.tolerance)]
    command += ["--max-new-unsupported", str(args.max_new_unsupported)]
    command += ["--max-lost", str(args.max_lost)]
    print(f"evaluating {candidate} against live on the golden set", file=sys.stderr)
    process = await asyncio.create_subprocess_exec(*command)
    code = await process.wait()
    if code == EXIT_OK:
        return EXIT_OK
    if code == EXIT_REFUSED:
        print(
            f"release refused: {candidate} is worse than live on the golden set (the items "
            f"above); fix it with `add --stage`, or drop it with `discard {args.name}`",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    print(f"release refused: the evaluation failed (exit {code})", file=sys.stderr)
    return EXIT_USAGE


async def run_release(args: argparse.Namespace, store: VersionedStore) -> int:
    """release, rollback or discard; the store already checked by the gate for release."""
    if args.command == "release":
        evaluated = getattr(args, "evaluated", None)
        if evaluated is not None and await candidate_of(store, args.name) != evaluated:
            print(
                f"release refused: the candidate changed while {evaluated} was evaluated",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        versions = await store.release(args.name)
        print(f"released {args.name}: {describe(versions)}")
    elif args.command == "rollback":
        versions = await store.rollback(args.name)
        print(f"rolled back {args.name}: {describe(versions)}")
    else:
        versions = await store.discard(args.name)
        print(f"discarded the candidate of {args.name}: {describe(versions)}")
    return EXIT_OK
