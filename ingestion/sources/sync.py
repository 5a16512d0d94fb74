"""Sync a collection with a source: what is new or changed goes in, what left the source goes
out, a renamed document is re-keyed without being embedded again.

Each synced chunk records its source (`synced_from`), the source's version of it and when a
sync last found it current; only documents of this source are ever deleted. Documents added
by hand with the same id (a folder ingested with `add` before) are adopted, not re-embedded.

Nothing is deleted when the listing fails, and an empty listing of a source that has
documents in the collection changes nothing unless allowed: a source that is down, moved or
misconfigured never empties a collection.
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from ingestion.pipeline import (
    FileReport,
    Ingestor,
    SourceFile,
    content_hash,
    printable,
    touch_collection,
)
from ingestion.sources.base import Source, SourceDocument, SourceError
from kb.schema import DocumentInfo
from kb.store import VectorStore

log = logging.getLogger(__name__)

# Documents read into memory before they are handed to the ingestor together.
READ_BATCH_DOCUMENTS = 32
READ_BATCH_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class SyncReport:
    """What a sync changed (or, in a dry run, would change)."""

    source: str
    collection: str
    dry_run: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Documents that could not be taken, with the reason: what the collection had stays.
    failed: list[tuple[str, str]] = field(default_factory=list)
    # What the listing itself could not take (the source's own problems).
    problems: list[str] = field(default_factory=list)
    # The source failed as a whole (or listed nothing): the collection was left as it was.
    error: str | None = None
    chunks_written: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Everything listed went in and nothing was refused."""
        return self.error is None and not self.failed and not self.problems

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary the CLI prints with --json."""
        return {
            "source": self.source,
            "collection": self.collection,
            "dry_run": self.dry_run,
            "added": len(self.added),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "renamed": len(self.renamed),
            "deleted": len(self.deleted),
            "failed": len(self.failed),
            "problems": len(self.problems),
            "error": self.error,
            "chunks_written": self.chunks_written,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Plan:
    new: list[SourceDocument] = field(default_factory=list)
    changed: list[SourceDocument] = field(default_factory=list)
    # Same version as synced: only the time of the sync is recorded.
    unchanged: list[str] = field(default_factory=list)
    # Added by hand with the same content: recorded as this source's, nothing embedded.
    adopted: list[SourceDocument] = field(default_factory=list)
    renamed: list[tuple[str, SourceDocument]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    # Bytes already read for a new document (to recognise a rename by its content).
    data: dict[str, bytes] = field(default_factory=dict)


async def sync(
    source: Source,
    collection: str,
    ingestor: Ingestor,
    *,
    language: str | None = None,
    dry_run: bool = False,
    allow_empty: bool = False,
    on_file: Callable[[FileReport], None] | None = None,
) -> SyncReport:
    """Bring a collection in line with a source; in a dry run, only say what would change."""
    started = time.perf_counter()
    report = SyncReport(source.label, collection, dry_run)
    store = ingestor.store
    stored = await _stored(store, collection)
    mine = {d: info for d, info in stored.items() if info.synced_from == source.label}
    known = {d: info.source_version for d, info in mine.items() if info.source_version}
    try:
        listing = await source.list(known)
    except SourceError as exc:
        report.error = str(exc)
    except Exception as exc:  # whatever breaks in a source, the collection keeps its documents
        report.error = f"{source.label}: {type(exc).__name__}: {exc}"
    report.problems = list(getattr(source, "problems", None) or [])
    if report.error is not None:
        log.error(
            "sync of %s into %s failed, nothing changed: %s", source.label, collection, report.error
        )
        report.seconds = time.perf_counter() - started
        return report
    if not listing and mine and not allow_empty:
        report.error = (
            f"{source.label} listed no documents: the {len(mine)} documents synced from it "
            f"stay in {collection} (if the source is really empty, sync with --allow-empty)"
        )
        log.error("%s", report.error)
        report.seconds = time.perf_counter() - started
        return report
    plan = await _plan(source, listing, stored, mine, report)
    report.added = [d.doc_id for d in plan.new]
    report.changed = [d.doc_id for d in plan.changed]
    report.unchanged = plan.unchanged + [d.doc_id for d in plan.adopted]
    report.renamed = [(old, new.doc_id) for old, new in plan.renamed]
    report.deleted = list(plan.gone)
    if not dry_run:
        await _Run(source, collection, ingestor, report, language, on_file).apply(plan)
    report.seconds = time.perf_counter() - started
    return report


async def _stored(store: VectorStore, collection: str) -> dict[str, DocumentInfo]:
    """The collection's documents, one entry each. A document left in several versions by an
    interrupted write is entered without its source version, so the sync writes it again."""
    if await store.get_collection(collection) is None:
        return {}
    by_id: dict[str, list[DocumentInfo]] = {}
    for info in await store.list_documents(collection):
        by_id.setdefault(info.doc_id, []).append(info)
    stored = {}
    for doc_id, versions in by_id.items():
        newest = max(versions, key=lambda v: (v.complete, v.ingested_at))
        settled = len(versions) == 1 and newest.complete
        stored[doc_id] = newest if settled else replace(newest, source_version=None)
    return stored


async def _plan(
    source: Source,
    listing: Sequence[SourceDocument],
    stored: Mapping[str, DocumentInfo],
    mine: Mapping[str, DocumentInfo],
    report: SyncReport,
) -> _Plan:
    plan = _Plan()
    listed: set[str] = set()
    for doc in listing:
        if doc.doc_id in listed:
            report.problems.append(f"{printable(doc.doc_id)}: listed twice (the first is kept)")
            continue
        listed.add(doc.doc_id)
        info = stored.get(doc.doc_id)
        if info is None:
            plan.new.append(doc)
        elif info.synced_from not in (None, source.label):
            report.failed.append(
                (doc.doc_id, f"already synced from {info.synced_from}: left as it is")
            )
        elif info.synced_from is None and doc.content_hash == info.content_hash:
            plan.adopted.append(doc)
        elif info.synced_from == source.label and info.source_version == doc.version:
            plan.unchanged.append(doc.doc_id)
        else:
            plan.changed.append(doc)
    gone = {d: info for d, info in mine.items() if d not in listed}
    by_hash = {info.content_hash: d for d, info in gone.items() if _renamable(d, info)}
    for doc in list(plan.new) if by_hash else []:
        digest = doc.content_hash
        if digest is None:
            # The listing does not know the content: read it now (needed anyway to add it).
            try:
                plan.data[doc.doc_id] = await source.read(doc)
            except SourceError as exc:
                report.failed.append((doc.doc_id, str(exc)))
                plan.new.remove(doc)
                continue
            digest = content_hash(plan.data[doc.doc_id])
        old = by_hash.pop(digest, None)
        if old is not None:
            plan.new.remove(doc)
            plan.data.pop(doc.doc_id, None)
            plan.renamed.append((old, doc))
            del gone[old]
    plan.gone = sorted(gone)
    return plan


def _renamable(doc_id: str, info: DocumentInfo) -> bool:
    """A document can move to a new id without new vectors unless its title came from its
    old name (a text without a heading is titled by its file name, and embedded with it)."""
    stem = PurePosixPath(doc_id).stem
    return info.complete and info.title.strip() != stem.strip()


def _fields(source: Source, doc: SourceDocument, now: datetime) -> dict[str, Any]:
    """What a sync records in each chunk of a document."""
    return {
        "source": doc.url or source.label,
        "synced_from": source.label,
        "source_version": doc.version,
        "synced_at": now.isoformat(),
        "access": {key: list(values) for key, values in doc.access.items()},
        "metadata": dict(doc.metadata),
    }


@dataclass(slots=True)
class _Run:
    """One sync being applied."""

    source: Source
    collection: str
    ingestor: Ingestor
    report: SyncReport
    language: str | None
    on_file: Callable[[FileReport], None] | None

    async def apply(self, plan: _Plan) -> None:
        """Write, then re-key, then delete: a crash at any point loses no document."""
        store, name, now = self.ingestor.store, self.collection, datetime.now(UTC)
        to_read = plan.new + plan.changed
        by_id = {d.doc_id: d for d in to_read}
        for doc_id in await self.ingest(to_read, plan.data):
            # Same bytes under a new version (a touched file, a new ETag): record the version.
            await store.set_document_fields(
                name, [doc_id], _fields(self.source, by_id[doc_id], now)
            )
        for doc in plan.adopted:
            await store.set_document_fields(name, [doc.doc_id], _fields(self.source, doc, now))
        await store.set_document_fields(name, plan.unchanged, {"synced_at": now.isoformat()})
        for old, doc in plan.renamed:
            moved = await store.rekey_document(
                name, old, doc.doc_id, _fields(self.source, doc, now)
            )
            log.info(
                "%s: renamed %s to %s (%d chunks moved, none embedded)",
                name,
                printable(old),
                printable(doc.doc_id),
                moved,
            )
        for doc_id in plan.gone:
            await self.ingestor.delete(name, doc_id)
        if plan.renamed:
            # Citations name documents by id: answers cached before a rename are not served.
            await touch_collection(store, name)

    async def ingest(
        self, documents: Sequence[SourceDocument], data: Mapping[str, bytes]
    ) -> list[str]:
        """Read and ingest documents in bounded batches; returns the ids the ingestor found
        unchanged (same bytes), whose new version still has to be recorded."""
        report = self.report
        unchanged: list[str] = []
        failed = {doc_id for doc_id, _ in report.failed}
        batch: list[SourceFile] = []
        size = 0

        async def flush() -> None:
            nonlocal size
            if not batch:
                return
            result = await self.ingestor.ingest(
                batch, self.collection, self.language, on_file=self.on_file
            )
            for file in result.files:
                if file.status == "failed":
                    report.failed.append((file.doc_id, file.reason))
                    failed.add(file.doc_id)
                elif file.status == "unchanged":
                    unchanged.append(file.doc_id)
            report.chunks_written += result.chunks_written
            batch.clear()
            size = 0

        for doc in documents:
            try:
                body = data[doc.doc_id] if doc.doc_id in data else await self.source.read(doc)
            except SourceError as exc:
                report.failed.append((doc.doc_id, str(exc)))
                failed.add(doc.doc_id)
                continue
            batch.append(_source_file(self.source, doc, body))
            size += len(body)
            if len(batch) >= READ_BATCH_DOCUMENTS or size >= READ_BATCH_BYTES:
                await flush()
        await flush()
        # A failed document keeps what the collection had; one with the same bytes as stored
        # had nothing written, so it is not counted as changed.
        report.added = [d for d in report.added if d not in failed]
        report.changed = [d for d in report.changed if d not in failed and d not in unchanged]
        report.unchanged += unchanged
        return unchanged


def _source_file(source: Source, doc: SourceDocument, body: bytes) -> SourceFile:
    return SourceFile(
        doc_id=doc.doc_id,
        name=doc.name,
        source=doc.url or source.label,
        data=body,
        synced_from=source.label,
        source_version=doc.version,
        access=doc.access,
        metadata=doc.metadata,
    )
