"""`python -m app forget-user TELEGRAM_ID` and `python -m app retention`: the data-protection
commands, on the stores themselves (no models are loaded). On the embedded store the bot must
be stopped first (the store is locked to one process; the error says so)."""

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from app.bot.app import make_redis
from app.bot.settings import BotSettings
from app.cache import AnswerCache
from app.loop.records import LoopRecords
from app.ops.forget import forget_user
from app.ops.retention import Retention
from app.ops.settings import OpsSettings
from app.ops.traces import TraceAdmin
from app.prompts import PromptStore, load_prompt_files
from app.settings import Settings
from kb.embedder import DenseEmbedders, SparseEmbedder
from kb.factory import open_store
from kb.settings import load_settings
from kb.store import VectorStore

EXIT_OK, EXIT_FAILED = 0, 1


def add_parsers(commands: Any) -> None:
    """The two subcommands, on `python -m app`'s subparsers."""
    forget = commands.add_parser(
        "forget-user",
        help="delete one person's data: conversation state, loop records, cache, traces",
    )
    forget.add_argument("user_id", metavar="TELEGRAM_ID", type=_telegram_id)
    forget.add_argument("--json", action="store_true", help="print the report as JSON, last")
    retention = commands.add_parser(
        "retention", help="delete traces, loop records and cache entries past their retention"
    )
    retention.add_argument("--json", action="store_true", help="print the result as JSON, last")


def _cache(settings: Settings, store: VectorStore) -> AnswerCache | None:
    """The answer cache on the store (None with CACHE_MODE=off); forgetting and expiring read
    the store only, so no model is loaded."""
    if settings.cache.mode == "off":
        return None
    return AnswerCache(
        store,
        DenseEmbedders(settings.embedding),
        SparseEmbedder(),
        prompts=PromptStore(load_prompt_files(settings.chain.prompts_dir)),
        settings=settings.cache,
    )


def _telegram_id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a Telegram user id (a number)"
        ) from None
    if number <= 0:
        raise argparse.ArgumentTypeError("a Telegram user id is a positive number")
    return number


async def run_forget(args: argparse.Namespace) -> int:
    """Forget one user in every store; 1 when a store failed (run it again)."""
    settings = Settings.load()
    redis = make_redis(load_settings(BotSettings))
    traces = TraceAdmin.from_settings(settings.langfuse)
    store = open_store(settings.qdrant)
    try:
        report = await forget_user(
            args.user_id, store=store, redis=redis, traces=traces, cache=_cache(settings, store)
        )
    finally:
        await store.close()
        if redis is not None:
            await redis.aclose()
    for line in report.lines():
        print(line)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    return EXIT_FAILED if report.failed else EXIT_OK


async def run_retention(args: argparse.Namespace) -> int:
    """One retention pass; 1 when a store failed."""
    settings = Settings.load()
    ops = load_settings(OpsSettings)
    store = open_store(settings.qdrant)
    try:
        # Only purge() is used: it reads dates, not vectors, so no model is loaded.
        loop = LoopRecords(
            store,
            DenseEmbedders(settings.embedding),
            SparseEmbedder(),
            retention_days=settings.loop.retention_days,
        )
        retention = Retention(
            loop,
            TraceAdmin.from_settings(settings.langfuse),
            ops.trace_retention_days,
            cache=_cache(settings, store),
        )
        removed, failed = await retention.run(datetime.now(UTC))
    finally:
        await store.close()
    for name, count in removed.items():
        print(f"removed {name}: {count}")
    for name, why in failed.items():
        print(f"FAILED {name}: {why} (run it again)")
    if args.json:
        print(json.dumps({"removed": removed, "failed": failed}))
    return EXIT_FAILED if failed else EXIT_OK
