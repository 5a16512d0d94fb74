"""`python -m ingestion crawl URL` and `python -m ingestion confluence URL --space KEY`: one
web site or Confluence space synced into a collection, once or on a schedule (--every).

Both build the same sources the collections file declares (ingestion/sources/config.py) and
run them through the sync (ingestion/sources/sync.py): a crawl from the command line and one
from the file share the crawl state, and a failing source deletes nothing.
"""

import argparse
import sys
from collections.abc import Callable

from ingestion.pipeline import Ingestor
from ingestion.settings import IngestionSettings
from ingestion.sources.cli import Job, every, run_round
from ingestion.sources.config import ConfluenceSourceConfig, WebSourceConfig, build_source
from ingestion.sources.settings import SyncSettings, parse_interval
from kb.embedder import BM25_LANGUAGES, DenseEmbedders, SparseEmbedder
from kb.errors import ConfigurationError
from kb.settings import EmbeddingSettings, load_settings
from kb.store import VectorStore

EXIT_USAGE = 2
_FROM_SETTINGS = "setting"


def add_source_parsers(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    collection_arg: Callable[[str], str],
) -> None:
    """Register `crawl` and `confluence` with the ingestion CLI."""
    crawl = commands.add_parser(
        "crawl",
        help="sync a collection with a web site: its sitemap, or the same-site links under URL",
    )
    crawl.add_argument("url", metavar="URL")
    crawl.add_argument("--rate", type=_positive(float), default=2.0, help="requests per second")
    crawl.add_argument(
        "--max-pages", type=_positive(int), default=1000, help="documents listed at most"
    )
    _common(crawl, collection_arg)
    confluence = commands.add_parser(
        "confluence", help="sync a collection with Confluence spaces (pages and attachments)"
    )
    confluence.add_argument("url", metavar="URL", help="the site (Cloud: https://x.atlassian.net)")
    confluence.add_argument("--space", action="append", required=True, dest="spaces", metavar="KEY")
    confluence.add_argument("--flavor", choices=["cloud", "datacenter"], required=True)
    confluence.add_argument("--email", help="Cloud: the account the API token belongs to")
    confluence.add_argument(
        "--token-env",
        default="CONFLUENCE_TOKEN",
        metavar="NAME",
        help="the variable holding the API token (Cloud) or personal access token (Data "
        "Center); default CONFLUENCE_TOKEN",
    )
    confluence.add_argument("--no-attachments", action="store_true")
    _common(confluence, collection_arg)


def _common(parser: argparse.ArgumentParser, collection_arg: Callable[[str], str]) -> None:
    parser.add_argument("--collection", required=True, type=collection_arg)
    parser.add_argument("--language", choices=sorted(BM25_LANGUAGES))
    parser.add_argument("--dry-run", action="store_true", help="show what would change")
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="let a source that lists nothing delete what was synced from it",
    )
    parser.add_argument(
        "--every",
        nargs="?",
        const=_FROM_SETTINGS,
        metavar="INTERVAL",
        help="sync again after each interval (30s, 15m, 1h; alone: SYNC_EVERY)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary per round")


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
        return number

    return parse


async def run_source(args: argparse.Namespace, store: VectorStore) -> int:
    """The `crawl` and `confluence` commands (the CLI's composition root hands the store)."""
    settings = load_settings(SyncSettings)
    every_arg = settings.every if args.every == _FROM_SETTINGS else args.every
    try:
        interval = None if every_arg is None else parse_interval(every_arg)
        config = _config(args)
        source = build_source(config, state_dir=settings.state_dir)
    except (ValueError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    dense = DenseEmbedders(load_settings(EmbeddingSettings))
    ingestor = Ingestor(store, dense, SparseEmbedder(), load_settings(IngestionSettings))
    jobs = [Job(args.collection, args.language, source, label=source.label)]

    async def round_() -> int:
        return await run_round(
            jobs, ingestor, dry_run=args.dry_run, allow_empty=args.allow_empty, as_json=args.json
        )

    try:
        return await (round_() if interval is None else every(round_, interval))
    finally:
        await source.aclose()


def _config(args: argparse.Namespace) -> WebSourceConfig | ConfluenceSourceConfig:
    """The declaration the arguments make; ValueError (pydantic's) when it is not valid."""
    if args.command == "crawl":
        return WebSourceConfig(
            kind="web", url=args.url, rate_per_s=args.rate, max_pages=int(args.max_pages)
        )
    return ConfluenceSourceConfig(
        kind="confluence",
        url=args.url,
        flavor=args.flavor,
        spaces=tuple(args.spaces),
        email=args.email,
        token_env=args.token_env,
        attachments=not args.no_attachments,
    )
