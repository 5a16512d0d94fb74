"""Errors of the ingestion pipeline."""


class IngestionError(Exception):
    """Base class for ingestion errors."""


class UnreadableDocumentError(IngestionError):
    """A file that cannot be ingested; the message is the reason shown to the user."""
