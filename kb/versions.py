"""Versions of a knowledge base: a logical name (what the bot, the chain and the collections
file use) points at one physical collection, the live version; a candidate is built beside it
and released by moving the pointer (a Qdrant alias on the server, a pointer file on the
embedded store).

A physical version is named NAME@vN: '@' is not allowed in a logical name, so a version can
never collide with a knowledge base. A collection created before versions existed (or never
staged) is its own physical collection under the logical name: version 1 (its first copy
is NAME@v2 on both stores). The versions of a name, ordered by N, are all the state there
is besides the pointer: the live one; the candidate, the newest one above live; the
previous one, the newest one below live (kept for rollback). Any other version is stale and
deleted at the next release or rollback."""

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from kb.errors import KBError
from kb.schema import Candidate, Chunk, ChunkVectors, CollectionSpec, DocumentInfo, SparseVector
from kb.store import validate_collection_name

if TYPE_CHECKING:
    from kb.store import VersionedStore

SEPARATOR = "@"
_VERSION = re.compile(r"(?P<name>[^@]+)@v(?P<number>[1-9][0-9]{0,8})")


class VersionError(KBError):
    """A release, rollback or stage that the versions of a collection do not allow."""


def version_name(name: str, number: int) -> str:
    """The physical collection of version number of a knowledge base."""
    return f"{name}{SEPARATOR}v{number}"


def version_number(name: str, physical: str) -> int | None:
    """N of NAME@vN, 1 for the logical name itself, None for another collection's."""
    if physical == name:
        return 1
    match = _VERSION.fullmatch(physical)
    if match is None or match["name"] != name:
        return None
    return int(match["number"])


def logical_name(physical: str) -> str:
    """The knowledge base a physical collection belongs to."""
    return physical.split(SEPARATOR, 1)[0]


def validate_store_name(name: str) -> str:
    """A logical collection name, or one of its versions (NAME@vN)."""
    match = _VERSION.fullmatch(name)
    validate_collection_name(match["name"] if match else name)
    return name


@dataclass(frozen=True, slots=True)
class Versions:
    """The physical versions of one knowledge base."""

    name: str
    live: str
    candidate: str | None = None
    previous: str | None = None
    # Versions nothing points at any more (an undone release, an interrupted one): deleted
    # at the next release or rollback.
    stale: tuple[str, ...] = ()

    @property
    def next_version(self) -> str:
        """The name a new candidate gets: one above every version that exists."""
        known = [self.live, self.candidate, self.previous, *self.stale]
        numbers = [version_number(self.name, p) for p in known if p is not None]
        return version_name(self.name, max(n for n in numbers if n is not None) + 1)

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready: the live, candidate and previous physical collections."""
        return {"live": self.live, "candidate": self.candidate, "previous": self.previous}


def arrange(name: str, physical: Iterable[str], live: str) -> Versions:
    """Which of a name's physical versions is the candidate, the previous one, stale."""
    numbered = sorted(
        (n, p) for p in set(physical) if (n := version_number(name, p)) is not None and p != live
    )
    live_number = version_number(name, live) or 1
    above = [p for n, p in numbered if n > live_number]
    below = [p for n, p in numbered if n < live_number]
    candidate = above[-1] if above else None
    previous = below[-1] if below else None
    stale = tuple(p for _, p in numbered if p not in (candidate, previous))
    return Versions(name, live, candidate, previous, stale)


def released(versions: Versions) -> tuple[Versions, list[str]]:
    """The versions after a release, and the physical collections to delete: the old
    previous one and the stale ones (the old live one becomes previous)."""
    if versions.candidate is None:
        raise VersionError(
            f"collection {versions.name!r} has no candidate to release: stage one with "
            "`python -m ingestion add ... --stage`"
        )
    doomed = [p for p in (versions.previous, *versions.stale) if p is not None]
    after = Versions(versions.name, versions.candidate, None, versions.live)
    return after, doomed


def rolled_back(versions: Versions) -> tuple[Versions, list[str]]:
    """The versions after a rollback, and the physical collections to delete. The undone
    version becomes the candidate (fix it and release again); when a newer candidate was
    staged meanwhile, that one stays and the undone version goes: the candidate started as
    a copy of it."""
    if versions.previous is None:
        raise VersionError(f"collection {versions.name!r} has no previous version to go back to")
    doomed = list(versions.stale)
    candidate = versions.candidate
    if candidate is None:
        candidate = versions.live
    else:
        doomed.append(versions.live)
    return Versions(versions.name, versions.previous, candidate, None), doomed


class StagedStore:
    """A store whose knowledge bases read and write their candidate version where one is
    staged, under their logical names (chunks, specs and citations keep the logical name).
    Used by `ingestion add --stage` and `app eval --candidate`; it shares the store's
    connection, so closing it closes nothing."""

    def __init__(self, store: "VersionedStore", names: Collection[str] | None = None) -> None:
        self._store = store
        self._names = names
        self._resolved: dict[str, str] = {}
        self.staged: dict[str, Versions] = {}

    async def _physical(self, name: str) -> str:
        """The candidate of name when it has one (and is among the names asked for)."""
        found = self._resolved.get(name)
        if found is None:
            found = name
            if SEPARATOR not in name and (self._names is None or name in self._names):
                versions = await self._store.versions(name)
                if versions is not None and versions.candidate is not None:
                    found = versions.candidate
                    self.staged[name] = versions
            self._resolved[name] = found
        return found

    async def ensure_collection(self, spec: CollectionSpec) -> CollectionSpec:
        """The collection's (candidate's) spec; created when missing."""
        physical = await self._physical(spec.name)
        stored = await self._store.ensure_collection(replace(spec, name=physical))
        return replace(stored, name=spec.name)

    async def get_collection(self, name: str) -> CollectionSpec | None:
        """The candidate's spec, under the logical name."""
        spec = await self._store.get_collection(await self._physical(name))
        return None if spec is None else replace(spec, name=name)

    async def list_collections(self) -> list[str]:
        """The logical names, as the store lists them."""
        return await self._store.list_collections()

    async def update_collection(self, spec: CollectionSpec) -> None:
        """Store the candidate's changed spec."""
        await self._store.update_collection(replace(spec, name=await self._physical(spec.name)))

    async def upsert(self, collection: str, points: Sequence[ChunkVectors]) -> None:
        """Write into the candidate."""
        await self._store.upsert(await self._physical(collection), points)

    async def delete_document(
        self, collection: str, doc_id: str, keep: Collection[str] | None = None
    ) -> int:
        """Delete from the candidate."""
        return await self._store.delete_document(await self._physical(collection), doc_id, keep)

    async def document_versions(self, collection: str, doc_id: str) -> list[DocumentInfo]:
        """A document's versions in the candidate."""
        return await self._store.document_versions(await self._physical(collection), doc_id)

    async def rekey_document(
        self, collection: str, doc_id: str, new_doc_id: str, fields: Mapping[str, Any]
    ) -> int:
        """Move a document of the candidate to another id."""
        physical = await self._physical(collection)
        return await self._store.rekey_document(physical, doc_id, new_doc_id, fields)

    async def set_document_fields(
        self, collection: str, doc_ids: Sequence[str], fields: Mapping[str, Any]
    ) -> None:
        """Set payload fields in the candidate."""
        await self._store.set_document_fields(await self._physical(collection), doc_ids, fields)

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        """The candidate's documents."""
        return await self._store.list_documents(await self._physical(collection))

    async def candidates(
        self,
        collection: str,
        dense: Sequence[float],
        sparse: SparseVector,
        limit: int,
        doc_ids: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """Search the candidate."""
        physical = await self._physical(collection)
        return await self._store.candidates(physical, dense, sparse, limit, doc_ids)

    async def fetch(self, collection: str, point_ids: Sequence[str]) -> list[Chunk]:
        """Chunks of the candidate."""
        return await self._store.fetch(await self._physical(collection), point_ids)

    async def versions(self, name: str) -> Versions | None:
        """The store's versions of name."""
        return await self._store.versions(name)

    async def stage(self, name: str) -> Versions:
        """Stage on the store (the view then reads the new candidate)."""
        self._resolved.pop(name, None)
        return await self._store.stage(name)

    async def release(self, name: str) -> Versions:
        """Release on the store."""
        self._resolved.pop(name, None)
        return await self._store.release(name)

    async def rollback(self, name: str) -> Versions:
        """Roll back on the store."""
        self._resolved.pop(name, None)
        return await self._store.rollback(name)

    async def discard(self, name: str) -> Versions:
        """Discard the candidate on the store."""
        self._resolved.pop(name, None)
        return await self._store.discard(name)

    async def close(self) -> None:
        """The store belongs to whoever opened it."""
