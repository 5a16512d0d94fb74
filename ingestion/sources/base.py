"""What every source of documents offers the sync: a listing, and reading one document.

A source lists what it holds now (`list`); the sync compares that with what the collection
holds and reads only what is new or changed (`read`). A source that cannot list everything
raises `SourceError`: the sync then changes nothing, so a failed or empty listing never
empties a collection.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class SourceError(Exception):
    """The source could not be listed or read (unreachable, refused, malformed). Says which."""


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One document as the source lists it."""

    # Stable within the collection: a relative path, a canonical URL, "confluence:<page id>".
    doc_id: str
    # A file name whose suffix picks the reader ("guide.pdf", "page.html").
    name: str
    # Changes whenever the content may have changed: a content hash, an ETag, a page version.
    version: str
    # Where a reader can open the original (shown in /docs and in citations), when it has one.
    url: str | None = None
    title: str | None = None
    # sha256 of the bytes when the listing knows it without reading (a folder does): a renamed
    # document with the same content is re-keyed instead of embedded again.
    content_hash: str | None = None
    # Anything worth keeping with the chunks (author, space, last modified).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Who may read it at the source (Confluence page restrictions), kept in each chunk's access.
    access: Mapping[str, Sequence[str]] = field(default_factory=dict)


class Source(Protocol):
    """A folder, a web site, a Confluence space."""

    # Shown in reports and in /docs: "folder /data/handbook", "web https://wiki.example.com/".
    @property
    def label(self) -> str: ...

    async def list(self, known: Mapping[str, str]) -> list[SourceDocument]:
        """Everything the source holds now. `known` maps doc ids to the versions last synced,
        for sources that can skip unchanged documents cheaply (conditional requests)."""
        ...

    async def read(self, document: SourceDocument) -> bytes:
        """The document's bytes; raises SourceError naming the document when it cannot."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
