"""`python -m app gaps`: the owners' report of unanswered questions, from the command line.

It opens only the store and the records' model (no LLM): on a Qdrant server it runs beside
the bot; on the embedded store, while the bot is stopped (the folder is locked to one process).
"""

import argparse
import json
import sys
from datetime import UTC, datetime

from app.loop.gaps import Gap, report
from app.loop.records import LoopRecords, parse_since
from app.settings import Settings
from kb.embedder import DenseEmbedders, SparseEmbedder
from kb.factory import open_store


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `gaps` on the app's command line."""
    gaps = commands.add_parser("gaps", help="the most frequent unanswered questions")
    gaps.add_argument("--collection", action="append", help="only these (default: all)")
    gaps.add_argument("--since", default="30d", help="7d, 30d, 12h, 2w or a date (default 30d)")
    gaps.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    gaps.add_argument("--json", action="store_true", help='print {"gaps": [...]} last')


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the report; 0, or 2 for a bad --since."""
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"error: --since {exc}", file=sys.stderr)
        return 2
    store = open_store(settings.qdrant)
    try:
        loop = LoopRecords(
            store,
            DenseEmbedders(settings.embedding),
            SparseEmbedder(),
            language=settings.loop.language,
            retention_days=settings.loop.retention_days,
        )
        gaps = (await report(loop, since, args.collection))[: args.limit]
    finally:
        await store.close()
    if args.json:
        print(json.dumps({"gaps": [g.as_json() for g in gaps]}, ensure_ascii=False))
    else:
        _print(gaps, since)
    return 0


def _print(gaps: list[Gap], since: datetime) -> None:
    if not gaps:
        print(f"no unanswered questions since {since:%Y-%m-%d %H:%M}")
        return
    print(f"unanswered questions since {since:%Y-%m-%d %H:%M}, most frequent first:")
    now = datetime.now(UTC)
    for rank, gap in enumerate(gaps, 1):
        ago = (now - gap.last_asked).days
        where = ", ".join(gap.collections)
        print(f"{rank:>3}. {gap.count:>4}x  {gap.question}  [{where}; last {ago} d ago]")
        for example in gap.examples[1:]:
            print(f"       also: {example}")
