"""Originals of uploaded documents, kept as files: ORIGINALS_DIR/<collection>/<doc id>.

The layout is a folder per collection whose file names are the documents' ids, so
`python -m ingestion add ORIGINALS_DIR/<collection> --collection <collection>` ingests them
again under the same ids (after a change of the embedding model), and a backup of the folder
is a backup of every upload. Limits per file and in total keep the volume from filling up.
"""

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingestion.settings import OriginalsSettings

log = logging.getLogger(__name__)
_MB = 1024 * 1024

Refusal = Literal["file", "total"]


@dataclass(frozen=True, slots=True)
class Originals:
    """The folder of kept originals and its limits (bytes)."""

    root: Path
    max_file_bytes: int
    max_total_bytes: int

    @classmethod
    def from_settings(cls, settings: OriginalsSettings) -> "Originals | None":
        """The folder, or None when ORIGINALS_KEEP is off."""
        if not settings.keep:
            return None
        return cls(settings.dir, int(settings.max_file_mb * _MB), int(settings.max_total_mb * _MB))

    def path(self, collection: str, doc_id: str) -> Path | None:
        """Where a document's original is (or would be) kept; None for an id that is not one
        plain file name (it could point outside the folder)."""
        name = doc_id.strip()
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
            return None
        if not collection or any(c in collection for c in "/\\\0") or collection.startswith("."):
            return None
        return self.root / collection / name

    def total_bytes(self) -> int:
        """Bytes kept now, over every collection."""
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def refusal(self, collection: str, doc_id: str, size: int, reserved: int = 0) -> Refusal | None:
        """Why a file of this size cannot be kept ("file": over the per-file limit, "total":
        the folder, plus `reserved` bytes about to be written, would grow past its limit; a
        file it replaces is counted out), or None."""
        if size > self.max_file_bytes:
            return "file"
        path = self.path(collection, doc_id)
        replaced = path.stat().st_size if path is not None and path.is_file() else 0
        if self.total_bytes() + reserved - replaced + size > self.max_total_bytes:
            return "total"
        return None

    def keep(self, collection: str, doc_id: str, data: bytes) -> Path | None:
        """Write the original (replacing an older one at once: a temporary file renamed over
        it); None when the id cannot be a file name."""
        path = self.path(collection, doc_id)
        if path is None:
            log.warning("original of %r not kept: not a plain file name", doc_id)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def find(self, collection: str, doc_id: str) -> Path | None:
        """The kept original, if there is one."""
        path = self.path(collection, doc_id)
        return path if path is not None and path.is_file() else None

    def delete(self, collection: str, doc_id: str) -> bool:
        """Remove the kept original; True when there was one."""
        path = self.find(collection, doc_id)
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True
