"""A folder as a source: every file under it, with the ids `python -m ingestion add` gives them.

A document's id is its path relative to the folder, its version the sha256 of its bytes (so a
folder added by hand before syncs without embedding anything again, and a renamed file is
recognised by its content). Hashes are kept per (size, mtime, inode) for the source's
lifetime: a scheduled or watching sync reads only the files that changed.

What cannot be taken (a broken link, an unreadable subfolder) is named in `problems`; a
document the collection already holds from there is listed with its last synced version, so
it is kept as it is rather than deleted. A missing or unreadable folder is a SourceError.
"""

import asyncio
import builtins
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from ingestion.pipeline import printable, scan
from ingestion.sources.base import SourceDocument, SourceError

_READ_BLOCK = 1024 * 1024
# scan()'s reason for a folder it could not list (its files are unknown, not gone).
_FOLDER_PROBLEM = "cannot read folder"


class FolderSource:
    """The files under one folder (hidden ones excepted, as `add` does)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        # What the last listing could not take, by path, for the report.
        self.problems: list[str] = []
        self._hashes: dict[str, tuple[int, int, int, str]] = {}

    @property
    def label(self) -> str:
        """The source as reports and /docs name it."""
        return f"folder {self.root}"

    async def list(self, known: Mapping[str, str]) -> builtins.list[SourceDocument]:
        """Every file under the folder, hashed (off the event loop)."""
        return await asyncio.to_thread(self._list, known)

    def _list(self, known: Mapping[str, str]) -> builtins.list[SourceDocument]:
        if not self.root.is_dir():
            reason = "not a folder" if self.root.exists() else "no such folder"
            raise SourceError(f"{self.label}: {reason}")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise SourceError(f"{self.label}: cannot read the folder (permission denied)")
        files, skipped = scan([self.root])
        self.problems = []
        documents: builtins.list[SourceDocument] = []
        unreadable: builtins.list[str] = []
        for problem in skipped:
            doc_id = problem.doc_id
            if problem.reason.startswith(_FOLDER_PROBLEM):
                if doc_id in (".", ""):
                    raise SourceError(f"{self.label}: {problem.reason}")
                unreadable.append(doc_id)
            self._skip(doc_id, problem.reason, known, documents)
        for file in files:
            assert file.path is not None
            try:
                digest = self._hash(file.path)
            except OSError as exc:
                self._skip(file.doc_id, f"cannot read file: {exc.strerror}", known, documents)
                continue
            documents.append(self._document(file.doc_id, digest, digest))
        # Files under a folder that could not be listed are unknown, not gone: keep them.
        listed = {d.doc_id for d in documents}
        for doc_id, version in known.items():
            if doc_id not in listed and any(_under(doc_id, f) for f in unreadable):
                documents.append(self._document(doc_id, version, None))
        return documents

    def _skip(
        self,
        doc_id: str,
        reason: str,
        known: Mapping[str, str],
        documents: builtins.list[SourceDocument],
    ) -> None:
        kept = doc_id in known
        self.problems.append(
            f"{printable(doc_id)}: {reason}"
            + (" (the last synced version is kept)" if kept else "")
        )
        if kept:
            documents.append(self._document(doc_id, known[doc_id], None))

    def _document(self, doc_id: str, version: str, digest: str | None) -> SourceDocument:
        path = self.root / doc_id
        return SourceDocument(
            doc_id=doc_id,
            name=PurePosixPath(doc_id).name,
            version=version,
            url=str(path.resolve()) if digest is not None else str(path),
            content_hash=digest,
        )

    def _hash(self, path: Path) -> str:
        stat = path.stat()
        key = str(path)
        seen = self._hashes.get(key)
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if seen is not None and seen[:3] == signature:
            return seen[3]
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(_READ_BLOCK):
                digest.update(block)
        self._hashes[key] = (*signature, digest.hexdigest())
        return digest.hexdigest()

    async def read(self, document: SourceDocument) -> bytes:
        """The file's bytes; SourceError naming it when it cannot be read."""
        path = self.root / document.doc_id
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise SourceError(
                f"{printable(document.doc_id)}: cannot read file: {exc.strerror}"
            ) from None

    async def aclose(self) -> None:
        """Nothing to release."""


def _under(doc_id: str, folder: str) -> bool:
    return doc_id.startswith(folder.rstrip("/") + "/")
