"""The ingestion command line: the composition root that builds store and embedders."""

import argparse
import asyncio
import json
import logging
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import yaml
from tqdm import tqdm

from ingestion.originals import Originals
from ingestion.pipeline import (
    FileReport,
    Ingestor,
    finish_interrupted,
    printable,
    scan,
    touch_collection,
)
from ingestion.release import add_release_parsers, candidate_of, eval_gate, run_release, staged
from ingestion.settings import CollectionsFileSettings, IngestionSettings, OriginalsSettings
from ingestion.sources.cli import add_sync_parser, run_sync
from ingestion.sources.web_cli import add_source_parsers, run_source
from kb.edge import EdgeStore
from kb.embedder import BM25_LANGUAGES, DenseEmbedders, SparseEmbedder
from kb.errors import ConfigurationError, KBError
from kb.factory import open_store
from kb.search import HybridSearcher
from kb.settings import EmbeddingSettings, QdrantSettings, SearchSettings, load_settings
from kb.store import (
    VectorStore,
    VersionedStore,
    is_system_collection,
    validate_knowledge_base_name,
)
from kb.versions import StagedStore, Versions

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingestion", description="Put documents into the knowledge base."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="ingest files and folders (PDF, DOCX, HTML, MD, TXT)")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument("--collection", required=True, type=collection_arg)
    add.add_argument(
        "--language",
        choices=sorted(BM25_LANGUAGES),
        help="language of a new collection (default: the one COLLECTIONS_FILE declares for it, "
        "else en; an existing one keeps its)",
    )
    add.add_argument("--force", action="store_true", help="re-embed unchanged documents too")
    add.add_argument("--stage", action="store_true", help=_STAGE_HELP)
    add.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    listing = commands.add_parser("list", help="list collections, or one collection's documents")
    listing.add_argument("--collection", type=collection_arg)
    listing.add_argument("--json", action="store_true", help="print JSON")
    search = commands.add_parser("search", help="show what a question finds (hybrid search)")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--collection", required=True, type=collection_arg, action="append")
    search.add_argument("--limit", type=int, default=5)
    search.add_argument("--json", action="store_true", help="print JSON")
    delete = commands.add_parser("delete", help="remove a document from a collection")
    delete.add_argument("doc_id", metavar="DOC_ID")
    delete.add_argument("--collection", required=True, type=collection_arg)
    delete.add_argument("--stage", action="store_true", help=_STAGE_HELP)
    repair = commands.add_parser(
        "repair",
        help="finish writes a crash interrupted (automatic with the embedded store; with a "
        "Qdrant server run it when no ingestion is running)",
    )
    repair.add_argument("--collection", type=collection_arg)
    add_sync_parser(commands)
    add_source_parsers(commands, collection_arg)
    add_release_parsers(commands, collection_arg)
    return parser


_STAGE_HELP = (
    "write into the collection's candidate (a copy of live, made if needed), not live: "
    "users see it after `release`"
)


def collection_arg(value: str) -> str:
    """argparse type: a valid collection name, or a usage error saying why not."""
    try:
        return validate_knowledge_base_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _chunks(n: int) -> str:
    return f"{n} chunk" if n == 1 else f"{n} chunks"


def _print_file(report: FileReport) -> None:
    detail = _chunks(report.chunks) if report.status != "failed" else report.reason
    tqdm.write(f"{report.status:<9} {printable(report.doc_id)}: {detail}", file=sys.stdout)


def declared_language(path: Path, collection: str) -> str | None:
    """The language the collections file declares for a collection (None: no file, or no
    language given there); ConfigurationError when the file cannot be read."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {exc}") from None
    entries = raw.get("collections") if isinstance(raw, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == collection and "language" in entry:
            language = str(entry["language"])
            if language not in BM25_LANGUAGES:
                raise ConfigurationError(
                    f"COLLECTIONS_FILE {path}: collection {collection!r} has language "
                    f"{language!r}, not one of {sorted(BM25_LANGUAGES)}"
                )
            return language
    return None


def _language(args: argparse.Namespace) -> str | None:
    """--language, else the collections file's; a contradiction is a usage error."""
    path = load_settings(CollectionsFileSettings).collections_file
    declared = declared_language(path, args.collection)
    if args.language and declared and args.language != declared:
        raise ConfigurationError(
            f"--language {args.language} contradicts COLLECTIONS_FILE {path}, which declares "
            f"{args.collection!r} as {declared}: change one of them"
        )
    return args.language or declared


async def _add(args: argparse.Namespace, store: VersionedStore) -> int:
    if args.stage:
        store = await staged(store, args.collection)
    settings = load_settings(IngestionSettings)
    language = _language(args)
    files, problems = scan(args.paths)
    for problem in problems:
        _print_file(problem)
    if not files:
        print("no files found under the given paths", file=sys.stderr)
        return EXIT_SOME_FAILED if problems else EXIT_USAGE
    dense = DenseEmbedders(load_settings(EmbeddingSettings))
    ingestor = Ingestor(store, dense, SparseEmbedder(), settings)
    with tqdm(total=len(files), unit="file", file=sys.stderr, disable=None) as bar:

        def on_file(report: FileReport) -> None:
            _print_file(report)
            bar.update(1)

        report = await ingestor.ingest(
            files, args.collection, language, force=args.force, on_file=on_file
        )
    report.files.extend(problems)
    summary = report.summary()
    print(
        "added {added}, replaced {replaced}, unchanged {unchanged}, failed {failed}; "
        "{chunks_written} chunks written in {seconds}s".format(**summary)
    )
    if args.json:
        print(json.dumps(summary))
    return EXIT_SOME_FAILED if report.count("failed") else EXIT_OK


async def _list(args: argparse.Namespace, store: VersionedStore) -> int:
    if args.collection is None:
        # The assistant's own records (sys-*) are not knowledge bases.
        names = [n for n in await store.list_collections() if not is_system_collection(n)]
        rows = []
        for name in names:
            spec = await store.get_collection(name)
            docs = await store.list_documents(name)
            rows.append({"collection": name, "documents": len({d.doc_id for d in docs}),
                         "language": spec.language if spec else "?",
                         **await _versions_row(store, name)})  # fmt: skip
        if args.json:
            print(json.dumps(rows))
        for row in rows if not args.json else []:
            print(f"{row['collection']}: {row['documents']} documents ({row['language']})"
                  + _versions_text(row))  # fmt: skip
        if not rows and not args.json:
            print("no collections yet: add documents with `python -m ingestion add`")
        return EXIT_OK
    if await store.get_collection(args.collection) is None:
        print(f"collection {args.collection!r} does not exist", file=sys.stderr)
        return EXIT_USAGE
    docs = await store.list_documents(args.collection)
    if args.json:
        print(json.dumps([
            {"doc_id": d.doc_id, "title": d.title, "chunks": d.stored_chunks,
             "source": d.source, "ingested_at": d.ingested_at.isoformat()}
            for d in docs
        ]))  # fmt: skip
        return EXIT_OK
    versions: dict[str, int] = {}
    for d in docs:
        versions[d.doc_id] = versions.get(d.doc_id, 0) + 1
    for d in docs:
        flag = "" if d.complete else f" (incomplete: {d.stored_chunks}/{d.chunk_count})"
        if versions[d.doc_id] > 1:
            flag += " (one of several versions: a write was interrupted or is running)"
        when = f"{d.ingested_at:%Y-%m-%d %H:%M}"
        print(f"{printable(d.doc_id)}\t{d.title}\t{_chunks(d.stored_chunks)}\t{when}{flag}")
    print(f"{len(versions)} documents in {args.collection}")
    if any(n > 1 for n in versions.values()):
        print(
            "some documents are stored in several versions: when no ingestion is running, "
            "`python -m ingestion repair` keeps the newest complete one",
            file=sys.stderr,
        )
    return EXIT_OK


async def _versions_row(store: VersionedStore, name: str) -> dict[str, object]:
    """The live version, and the staged candidate with its document count (nothing for a
    collection that was never staged: its rows stay as they were)."""
    versions = await store.versions(name)
    if versions is None or versions == Versions(name, name):
        return {}
    row: dict[str, object] = dict(versions.to_dict())
    if versions.candidate is not None:
        docs = await store.list_documents(versions.candidate)
        row["candidate_documents"] = len({d.doc_id for d in docs})
    return row


def _versions_text(row: dict[str, object]) -> str:
    text = f"; live {row['live']}" if row.get("live") not in (None, row["collection"]) else ""
    if row.get("candidate"):
        text += f"; candidate {row['candidate']}: {row['candidate_documents']} documents"
    if row.get("previous"):
        text += f"; previous {row['previous']} (for rollback)"
    return text


async def _search(args: argparse.Namespace, store: VectorStore) -> int:
    dense = DenseEmbedders(load_settings(EmbeddingSettings))
    searcher = HybridSearcher(store, dense, SparseEmbedder(), load_settings(SearchSettings))
    hits = await searcher.search(args.query, args.collection, limit=args.limit)
    if args.json:
        print(json.dumps([
            {"score": round(h.score, 4), "collection": h.chunk.collection,
             "doc_id": h.chunk.doc_id, "title": h.chunk.title,
             "heading_path": list(h.chunk.heading_path), "source": h.chunk.source,
             "page": h.chunk.page, "text": h.chunk.text}
            for h in hits
        ], ensure_ascii=False))  # fmt: skip
        return EXIT_OK
    for rank, hit in enumerate(hits, 1):
        chunk = hit.chunk
        where = chunk.context_line() + (f" (page {chunk.page})" if chunk.page else "")
        print(f"[{rank}] {hit.score:.3f}  {chunk.collection}/{chunk.doc_id}  {where}")
        print("    " + chunk.text[:300].replace("\n", " ") + ("…" if len(chunk.text) > 300 else ""))
    if not hits:
        print("nothing found")
    return EXIT_OK


async def _delete(args: argparse.Namespace, store: VersionedStore) -> int:
    if args.stage:
        store = await staged(store, args.collection)
    if await store.get_collection(args.collection) is None:
        print(f"collection {args.collection!r} does not exist", file=sys.stderr)
        return EXIT_USAGE
    removed = await store.delete_document(args.collection, args.doc_id)
    if removed:
        await touch_collection(store, args.collection)
    originals = Originals.from_settings(load_settings(OriginalsSettings))
    # An upload's kept original goes with its document (ORIGINALS_DIR); live still cites it
    # while the deletion is only staged.
    kept = (
        not args.stage and originals is not None and originals.delete(args.collection, args.doc_id)
    )
    if not removed and not kept:
        print(f"{args.doc_id} is not in {args.collection}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(
        f"deleted {args.doc_id} from {args.collection} ({_chunks(removed)}"
        f"{', and its kept original' if kept else ''})"
    )
    return EXIT_OK


async def _repair(args: argparse.Namespace, store: VectorStore) -> int:
    names = [args.collection] if args.collection else await store.list_collections()
    for name in names:
        if await store.get_collection(name) is None:
            print(f"collection {name!r} does not exist", file=sys.stderr)
            return EXIT_USAGE
        for repair in await finish_interrupted(store, name):
            print(
                f"repaired {name}/{printable(repair.doc_id)}: kept the version of "
                f"{repair.kept.ingested_at:%Y-%m-%d %H:%M:%S}, removed {_chunks(repair.removed)}"
            )
    return EXIT_OK


async def _gate(args: argparse.Namespace) -> int:
    """release --require-eval: the golden set on candidate and live, before the store is
    opened here (the evaluation opens it in its own process)."""
    store = open_store(load_settings(QdrantSettings))
    try:
        args.evaluated = await candidate_of(store, args.name)
    finally:
        await store.close()
    return await eval_gate(args, args.evaluated)


async def _run(args: argparse.Namespace) -> int:
    if args.command == "release" and args.require_eval:
        refused = await _gate(args)
        if refused:
            return refused
    store = open_store(load_settings(QdrantSettings))
    try:
        if isinstance(store, EdgeStore) and args.command != "repair":
            # The embedded store is locked to this process: no write can be running elsewhere,
            # so whatever a crash interrupted is finished before anything else.
            for name in await store.list_collections():
                await finish_interrupted(store, name)
                versions = await store.versions(name)
                if versions is not None and versions.candidate is not None:
                    await finish_interrupted(StagedStore(store, [name]), name)
        commands = {
            "add": _add,
            "list": _list,
            "search": _search,
            "delete": _delete,
            "repair": _repair,
            "sync": run_sync,
            "crawl": run_source,
            "confluence": run_source,
            "release": run_release,
            "rollback": run_release,
            "discard": run_release,
        }
        return await commands[args.command](args, store)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0 when all went in, 1 when some files failed, 2 on usage errors."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KBError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE
