"""Builds the store the settings ask for: Qdrant Edge when QDRANT_URL is unset, else a server."""

from kb.settings import QdrantSettings
from kb.store import VersionedStore


def open_store(settings: QdrantSettings) -> VersionedStore:
    """Open the configured store (the caller closes it)."""
    if settings.url:
        from kb.server import ServerStore

        return ServerStore.from_settings(settings)
    from kb.edge import EdgeStore

    return EdgeStore(settings.path)
