"""Documents into the knowledge base: read, chunk, embed in large batches, write idempotently."""

import asyncio
import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ingestion.chunking import chunk_document
from ingestion.errors import UnreadableDocumentError
from ingestion.originals import Originals
from ingestion.readers import read_document, too_large
from ingestion.settings import IngestionSettings
from kb.embedder import (
    DenseEmbedder,
    DenseEmbedders,
    SparseEmbedder,
    dense_spread,
    document_vector,
    tokens_per_word,
)
from kb.schema import Chunk, ChunkVectors, CollectionSpec, DocumentInfo
from kb.store import VectorStore

log = logging.getLogger(__name__)

Status = Literal["added", "unchanged", "replaced", "failed"]
# [CLS] and [SEP] (or their kind) take two places of the model's window.
_SPECIAL_TOKENS = 2
_MIN_CHUNK_TOKENS = 64
_MIN_BM25_AVG_LEN = 8.0


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One document to ingest: a file on disk, or bytes already in memory (an upload)."""

    doc_id: str
    source: str
    path: Path | None = None
    data: bytes | None = None
    # Where the original can be fetched again by id (a Telegram file_id), kept with the chunks.
    file_id: str | None = None
    # The file name whose suffix picks the reader, when the id has none (a URL, a page id).
    name: str | None = None
    # Set by a sync (ingestion/sources): the source's label and version, who may read it at
    # the source, and what it told about it; kept in every chunk.
    synced_from: str | None = None
    source_version: str | None = None
    access: Mapping[str, Sequence[str]] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def size(self) -> int:
        """Size in bytes, without reading the file."""
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size

    def read(self) -> bytes:
        """The document's bytes."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass(frozen=True, slots=True)
class FileReport:
    """What happened to one file."""

    doc_id: str
    status: Status
    chunks: int = 0
    reason: str = ""


@dataclass(slots=True)
class IngestReport:
    """What happened to a batch of files."""

    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        """How many files ended with this status."""
        return sum(1 for f in self.files if f.status == status)

    @property
    def chunks_written(self) -> int:
        """Chunks embedded and stored in this run."""
        return sum(f.chunks for f in self.files if f.status in ("added", "replaced"))

    def summary(self) -> dict[str, int | float]:
        """The machine-readable summary the CLI prints with --json."""
        return {
            "added": self.count("added"),
            "unchanged": self.count("unchanged"),
            "replaced": self.count("replaced"),
            "failed": self.count("failed"),
            "chunks_written": self.chunks_written,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Prepared:
    doc_id: str
    status: Status
    chunks: list[Chunk]


def content_hash(data: bytes) -> str:
    """The document version's identity: a hash of its bytes."""
    return hashlib.sha256(data).hexdigest()


class Ingestor:
    """Reads, chunks, embeds and writes documents; re-running on unchanged files embeds nothing."""

    def __init__(
        self,
        store: VectorStore,
        dense: DenseEmbedders,
        sparse: SparseEmbedder,
        settings: IngestionSettings,
    ) -> None:
        self.store = store
        self.dense = dense
        self.sparse = sparse
        self.settings = settings
        # Documents read and chunked at once (each holds its bytes and text in memory).
        self._reading = asyncio.Semaphore(settings.max_concurrent_documents)
        self._calibrating = asyncio.Lock()
        # Told every report (the bot's metrics); and the kept originals, deleted with their
        # document (ingestion/originals.py).
        self.on_report: Callable[[IngestReport], None] | None = None
        self.originals: Originals | None = None

    async def ensure_collection(
        self, name: str, language: str | None = None
    ) -> tuple[CollectionSpec, DenseEmbedder]:
        """Create the collection if needed (an existing one keeps its language unless told);
        its spec and its dense model: the one it was built with, or for a new collection the
        model configured for its language."""
        existing = await self.store.get_collection(name)
        if existing is not None:
            model = existing.embedding_model
            dense = await asyncio.to_thread(self.dense.for_model, model, name)
        else:
            dense = await asyncio.to_thread(self.dense.for_language, language or "en")
        wanted = CollectionSpec(
            name=name,
            dense_size=dense.dimension,
            embedding_model=dense.model_name,
            language=language or (existing.language if existing else "en"),
        )
        return await self.store.ensure_collection(wanted), dense

    async def ingest(
        self,
        files: Sequence[SourceFile],
        collection: str,
        language: str | None = None,
        force: bool = False,
        on_file: Callable[[FileReport], None] | None = None,
    ) -> IngestReport:
        """Ingest files into a collection; a bad file is reported and the rest go in."""
        started = time.perf_counter()
        spec, dense = await self.ensure_collection(collection, language)
        report = IngestReport()

        def done(file_report: FileReport) -> None:
            report.files.append(file_report)
            if on_file is not None:
                on_file(file_report)

        pending: list[_Prepared] = []

        async def write_pending() -> None:
            nonlocal spec
            if pending and spec.bm25_avg_len is None:
                # Several batches at once (uploads) calibrate a new collection once.
                async with self._calibrating:
                    spec = await self.store.get_collection(spec.name) or spec
                    if spec.bm25_avg_len is None:
                        spec = await self._calibrate(spec, pending)
            reports, spec = await self._write_group(pending, spec, dense)
            for file_report in reports:
                done(file_report)
            pending.clear()

        for source in files:
            prepared = await self._prepare(source, spec, dense, force)
            if isinstance(prepared, FileReport):
                done(prepared)
                continue
            pending.append(prepared)
            if sum(len(p.chunks) for p in pending) >= self.settings.embed_group_chunks:
                await write_pending()
        await write_pending()
        if report.count("added") or report.count("replaced"):
            await touch_collection(self.store, collection)
        report.seconds = time.perf_counter() - started
        if self.on_report is not None:
            self.on_report(report)
        return report

    async def _prepare(
        self, source: SourceFile, spec: CollectionSpec, dense: DenseEmbedder, force: bool
    ) -> _Prepared | FileReport:
        limits = self.settings.reader_limits()
        async with self._reading:
            try:
                size = source.size()
                if size > limits.max_file_bytes:
                    raise too_large(size, limits)
                data = await asyncio.to_thread(source.read)
            except OSError as exc:
                reason = f"cannot read file: {exc.strerror}"
                return FileReport(source.doc_id, "failed", reason=reason)
            except UnreadableDocumentError as exc:
                return FileReport(source.doc_id, "failed", reason=str(exc))
            digest = content_hash(data)
            versions = await self.store.document_versions(spec.name, source.doc_id)
            current = [v for v in versions if v.content_hash == digest and v.complete]
            if not force and current and len(versions) == 1:
                return FileReport(source.doc_id, "unchanged", chunks=current[0].chunk_count)
            try:
                chunks = await asyncio.to_thread(self.chunk, source, data, spec.name, dense, digest)
            except UnreadableDocumentError as exc:
                return FileReport(source.doc_id, "failed", reason=str(exc))
        return _Prepared(source.doc_id, "replaced" if versions else "added", chunks)

    def chunk_budget(self, title: str, dense: DenseEmbedder) -> int:
        """Tokens of text per chunk: as set, or the model's own chunk size, never more than
        fits its window after the title line it is embedded with (the model would cut off
        anything longer)."""
        if self.settings.chunk_tokens is not None:
            return self.settings.chunk_tokens
        room = dense.max_tokens - dense.count_tokens(title) - _SPECIAL_TOKENS
        return max(_MIN_CHUNK_TOKENS, min(room, dense.chunk_tokens or room))

    def chunk(
        self,
        source: SourceFile,
        data: bytes,
        collection: str,
        dense: DenseEmbedder,
        digest: str | None = None,
    ) -> list[Chunk]:
        """Read and chunk one document (blocking) for a collection embedded by dense; raises
        UnreadableDocumentError. digest is the content hash of data when the caller has it."""
        digest = digest or content_hash(data)
        doc = read_document(source.name or source.doc_id, data, self.settings.reader_limits())
        pieces = chunk_document(
            doc,
            dense.count_tokens,
            self.chunk_budget(doc.title, dense),
            self.settings.chunk_overlap_tokens,
        )
        if len(pieces) > self.settings.max_chunks:
            raise UnreadableDocumentError(
                f"document makes {len(pieces):,} chunks, over the {self.settings.max_chunks:,} "
                "limit (INGEST_MAX_CHUNKS): split it, or raise the limit"
            )
        now = datetime.now(UTC)
        return [
            Chunk(
                doc_id=source.doc_id,
                collection=collection,
                title=doc.title,
                heading_path=piece.heading_path,
                chunk_index=index,
                chunk_count=len(pieces),
                text=piece.text,
                content_hash=digest,
                ingested_at=now,
                source=doc.url or source.source,
                page=piece.page,
                file_id=source.file_id,
                access={key: list(values) for key, values in source.access.items()},
                synced_from=source.synced_from,
                source_version=source.source_version,
                synced_at=now if source.synced_from else None,
                metadata=dict(source.metadata),
            )
            for index, piece in enumerate(pieces)
        ]

    async def _write_group(
        self, group: Sequence[_Prepared], spec: CollectionSpec, embedder: DenseEmbedder
    ) -> tuple[list[FileReport], CollectionSpec]:
        """Embed and write a group of documents; the spec, with its dense spread measured
        if this is the first group that has enough documents for it."""
        if not group:
            return [], spec
        texts = [c.embedding_text() for p in group for c in p.chunks]
        dense = await asyncio.to_thread(embedder.embed_passages, texts)
        if spec.dense_spread is None:
            spread = dense_spread(dense, [c.doc_id for p in group for c in p.chunks])
            if spread is not None:
                fertility = await asyncio.to_thread(tokens_per_word, embedder, texts)
                spec = replace(spec, dense_spread=spread, tokens_per_word=fertility)
                await self.store.update_collection(spec)
        sparse = self.sparse.embed_passages(texts, spec.language, spec.bm25_avg_len)
        reports = []
        offset = 0
        for prepared in group:
            n = len(prepared.chunks)
            doc = document_vector(dense[offset : offset + n])
            points = [
                ChunkVectors(chunk, dense[offset + i], sparse[offset + i], doc)
                for i, chunk in enumerate(prepared.chunks)
            ]
            offset += n
            reports.append(await self._write(prepared, points, spec.name))
        return reports, spec

    async def _calibrate(self, spec: CollectionSpec, group: Sequence[_Prepared]) -> CollectionSpec:
        """Measure BM25's average chunk length on the first chunks a collection receives."""
        texts = [c.embedding_text() for p in group for c in p.chunks]
        length = self.sparse.average_length(texts, spec.language)
        calibrated = replace(spec, bm25_avg_len=round(max(_MIN_BM25_AVG_LEN, length), 1))
        await self.store.update_collection(calibrated)
        return calibrated

    async def _write(
        self, prepared: _Prepared, points: Sequence[ChunkVectors], collection: str
    ) -> FileReport:
        # The new version first, then every other point of the document: it is never missing
        # from search, whatever moment a crash comes at (finish_interrupted cleans up after).
        try:
            await self.store.upsert(collection, points)
            keep = {p.chunk.point_id for p in points}
            await self.store.delete_document(collection, prepared.doc_id, keep=keep)
        except Exception as exc:  # the batch goes on; the reason reaches the report
            log.exception("writing %s to %s failed", prepared.doc_id, collection)
            return FileReport(prepared.doc_id, "failed", reason=f"store error: {exc}")
        return FileReport(prepared.doc_id, prepared.status, chunks=len(points))

    async def delete(self, collection: str, doc_id: str) -> int:
        """Remove a document (and its kept original) from a collection; returns the number of
        chunks removed."""
        removed = await self.store.delete_document(collection, doc_id)
        if removed:
            await touch_collection(self.store, collection)
        if self.originals is not None:
            await asyncio.to_thread(self.originals.delete, collection, doc_id)
        return removed


async def touch_collection(store: VectorStore, collection: str) -> None:
    """Note that the collection's documents changed (a new generation in its spec): answers
    cached before are not served after (app/cache keys on it)."""
    spec = await store.get_collection(collection)
    if spec is not None:
        await store.update_collection(replace(spec, generation=uuid.uuid4().hex[:16]))


@dataclass(frozen=True, slots=True)
class Repair:
    """An interrupted write finished: the version kept, and how many other points went."""

    collection: str
    doc_id: str
    kept: DocumentInfo
    removed: int


async def finish_interrupted(store: VectorStore, collection: str) -> list[Repair]:
    """Finish what a crash interrupted: a document stored in several versions keeps its newest
    complete one (a new version written whole wins; one cut short is rolled back to the old).
    Run only where no other process may be writing (the embedded store holds a lock), or on
    request: a write in progress elsewhere looks the same. A document with no complete version
    is left as it is: it is listed as incomplete, and adding it again repairs it."""
    by_doc: dict[str, list[DocumentInfo]] = {}
    for info in await store.list_documents(collection):
        by_doc.setdefault(info.doc_id, []).append(info)
    repairs: list[Repair] = []
    for doc_id, versions in by_doc.items():
        complete = [v for v in versions if v.complete]
        if len(versions) < 2 or not complete:
            continue
        kept = max(complete, key=lambda v: v.ingested_at)
        removed = await store.delete_document(
            collection, doc_id, keep=set(kept.point_ids(collection))
        )
        log.warning(
            "%s/%s: finished an interrupted write (kept the version of %s, removed %d chunks)",
            collection,
            printable(doc_id),
            f"{kept.ingested_at:%Y-%m-%d %H:%M:%S}",
            removed,
        )
        repairs.append(Repair(collection, doc_id, kept, removed))
    return repairs


def printable(name: str) -> str:
    """A name safe on one report line: control characters (a newline in a file name) shown
    as escapes."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in name
    )


def discover(paths: Sequence[Path]) -> list[SourceFile]:
    """Files to ingest: a file stands for itself (its id is its name); a folder contributes
    every file under it except hidden ones (their ids are paths relative to the folder).
    What cannot be read is logged; scan() returns it for a report."""
    found, problems = scan(paths)
    for problem in problems:
        log.warning("skipped %s: %s", printable(problem.doc_id), problem.reason)
    return found


def scan(paths: Sequence[Path]) -> tuple[list[SourceFile], list[FileReport]]:
    """The files to ingest under paths, and every path that could not be taken, by name (a
    folder that cannot be read, a broken or looping symbolic link, a missing path)."""
    found: list[SourceFile] = []
    problems: list[FileReport] = []
    for path in paths:
        if path.is_dir():
            _scan_folder(path, found, problems)
        elif path.is_file():
            found.append(SourceFile(path.name, str(path.resolve()), path=path))
        else:
            problems.append(FileReport(str(path), "failed", reason=_missing(path)))
    return found, problems


def _scan_folder(root: Path, found: list[SourceFile], problems: list[FileReport]) -> None:
    def failed(path: Path, reason: str) -> None:
        problems.append(FileReport(path.relative_to(root).as_posix(), "failed", reason=reason))

    def unreadable(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        failed(folder, f"cannot read folder: {exc.strerror}")

    # Symbolic links to folders are followed, each real folder once (a link back up is a loop).
    seen: set[str] = set()
    files: list[Path] = []
    for folder, subfolders, names in os.walk(root, onerror=unreadable, followlinks=True):
        here = Path(folder)
        real = os.path.realpath(folder)
        if real in seen:
            failed(here, "symbolic link loop: the folder is already included")
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            file = here / name
            if file.is_file():
                files.append(file)
            else:
                failed(file, _missing(file))
    for file in sorted(files):
        found.append(SourceFile(file.relative_to(root).as_posix(), str(file.resolve()), path=file))


def _missing(path: Path) -> str:
    """Why a path that is not a regular file cannot be ingested."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return f"broken symbolic link (to {printable(os.readlink(path))})"
        return f"not found: {exc.strerror}"
    return "not a regular file"
