"""`python -m app prompts report`: its arguments and its run (a table, the JSON line last)."""

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.ab.report import FEEDBACK_SCORE, ReportError, print_report, report
from app.settings import LangfuseSettings
from app.tracing import Tracer


def add_report_parser(actions: Any) -> None:
    """The report action's arguments (actions: the prompts command's subparsers)."""
    parser = actions.add_parser(
        "report", help="feedback and eval metrics per prompt variant (prompt A/B)"
    )
    parser.add_argument(
        "--days", type=float, default=30.0, help="look this many days back (default: 30)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="also an eval run's --out file (repeatable)",
    )
    parser.add_argument(
        "--score", default=FEEDBACK_SCORE, help=f"feedback score name (default: {FEEDBACK_SCORE})"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")


async def run_report(args: argparse.Namespace, settings: LangfuseSettings) -> int:
    """Read, aggregate, print; 0, or an AppError for the CLI to print."""
    if args.days <= 0:
        raise ReportError("--days must be more than 0")
    since = datetime.now(UTC) - timedelta(days=args.days)
    tracer = Tracer.from_settings(settings)
    try:
        rows = await asyncio.to_thread(
            report,
            tracer.langfuse,
            args.results,
            since=since,
            default_label=settings.prompt_label,
            score=args.score,
        )
    finally:
        await asyncio.to_thread(tracer.shutdown)
    if not args.json:
        print_report(rows, sys.stdout)
    summary = {"since": since.isoformat(), "variants": [r.to_dict() for r in rows]}
    print(json.dumps(summary, ensure_ascii=False))
    return 0
