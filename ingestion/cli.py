"""The ingestion command line: the composition root that builds store and embedders."""

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ingestion.pipeline import FileReport, Ingestor, finish_interrupted, printable, scan
from ingestion.settings import IngestionSettings
from kb.edge import EdgeStore
from kb.embedder import BM25_LANGUAGES, DenseEmbedders, SparseEmbedder
from kb.errors import KBError
from kb.factory import open_store
from kb.search import HybridSearcher
from kb.settings import EmbeddingSettings, QdrantSettings, SearchSettings, load_settings
from kb.store import VectorStore, is_system_collection, validate_knowledge_base_name

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
        help="BM25 stemmer language of a new collection (default: en; an existing one keeps its)",
    )
    add.add_argument("--force", action="store_true", help="re-embed unchanged documents too")
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
    repair = commands.add_parser(
        "repair",
        help="finish writes a crash interrupted (automatic with the embedded store; with a "
        "Qdrant server run it when no ingestion is running)",
    )
    repair.add_argument("--collection", type=collection_arg)
    return parser


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


async def _add(args: argparse.Namespace, store: VectorStore) -> int:
    settings = load_settings(IngestionSettings)
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
            files, args.collection, args.language, force=args.force, on_file=on_file
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


async def _list(args: argparse.Namespace, store: VectorStore) -> int:
    if args.collection is None:
        # The assistant's own records (sys-*) are not knowledge bases.
        names = [n for n in await store.list_collections() if not is_system_collection(n)]
        rows = []
        for name in names:
            spec = await store.get_collection(name)
            docs = await store.list_documents(name)
            rows.append({"collection": name, "documents": len({d.doc_id for d in docs}),
                         "language": spec.language if spec else "?"})  # fmt: skip
        if args.json:
            print(json.dumps(rows))
        for row in rows if not args.json else []:
            print(f"{row['collection']}: {row['documents']} documents ({row['language']})")
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


async def _delete(args: argparse.Namespace, store: VectorStore) -> int:
    if await store.get_collection(args.collection) is None:
        print(f"collection {args.collection!r} does not exist", file=sys.stderr)
        return EXIT_USAGE
    removed = await store.delete_document(args.collection, args.doc_id)
    if not removed:
        print(f"{args.doc_id} is not in {args.collection}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"deleted {args.doc_id} from {args.collection} ({_chunks(removed)})")
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


async def _run(args: argparse.Namespace) -> int:
    store = open_store(load_settings(QdrantSettings))
    try:
        if isinstance(store, EdgeStore) and args.command != "repair":
            # The embedded store is locked to this process: no write can be running elsewhere,
            # so whatever a crash interrupted is finished before anything else.
            for name in await store.list_collections():
                await finish_interrupted(store, name)
        commands = {
            "add": _add,
            "list": _list,
            "search": _search,
            "delete": _delete,
            "repair": _repair,
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
