"""Domain errors of the knowledge base."""


class KBError(Exception):
    """Base class for knowledge-base errors."""


class StoreLockedError(KBError):
    """Another process owns the embedded store's folder."""


class CollectionNotFoundError(KBError):
    """A collection that was asked for does not exist."""


class CollectionMismatchError(KBError):
    """An existing collection was built with another embedding model or vector size."""


class ConfigurationError(KBError):
    """A setting has a bad value; the message names the environment variable."""


class StoreUnavailableError(KBError):
    """The Qdrant server cannot be reached."""
