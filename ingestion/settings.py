"""Ingestion settings (INGEST_*)."""

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingestion.readers.base import ReaderLimits


class IngestionSettings(BaseSettings):
    """Limits and chunking of the ingestion pipeline."""

    model_config = SettingsConfigDict(
        env_prefix="INGEST_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    max_file_mb: float = Field(default=50.0, gt=0)
    max_unzipped_mb: float = Field(default=200.0, gt=0)
    # Per document: pages of a PDF, characters of text, and chunks (what embedding costs).
    max_pages: int = Field(default=3000, ge=1)
    max_chars: int = Field(default=10_000_000, ge=1)
    max_chunks: int = Field(default=10_000, ge=1)
    # Documents read and chunked at once by one process (the bot's uploads share these).
    max_concurrent_documents: int = Field(default=1, ge=1)
    # Tokens of text per chunk; unset means the embedding model's window less the title line.
    chunk_tokens: int | None = Field(default=None, ge=32)
    chunk_overlap_tokens: int = Field(default=32, ge=0)
    # Chunks embedded together: bigger batches sort by length better and pad less.
    embed_group_chunks: int = Field(default=512, ge=1)

    def reader_limits(self) -> ReaderLimits:
        """The readers' guards from these settings."""
        return ReaderLimits(
            max_file_bytes=int(self.max_file_mb * 1024 * 1024),
            max_unzipped_bytes=int(self.max_unzipped_mb * 1024 * 1024),
            max_pages=self.max_pages,
            max_chars=self.max_chars,
        )


class OriginalsSettings(BaseSettings):
    """Files uploaded through the bot, kept as sent (ORIGINALS_*): re-sent to readers, ingested
    again after a model change (`python -m ingestion add ORIGINALS_DIR/<collection>`), backed
    up; deleted with their document."""

    model_config = SettingsConfigDict(
        env_prefix="ORIGINALS_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    keep: bool = True
    dir: Path = Path("data/originals")
    # An upload over either limit is refused with a message (nothing is ingested).
    max_file_mb: float = Field(default=20.0, gt=0)
    max_total_mb: float = Field(default=2048.0, gt=0)


class CollectionsFileSettings(BaseSettings):
    """The bot's collections file (COLLECTIONS_FILE), read by `add` for the language a
    collection declares there."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    collections_file: Path = Field(
        default=Path("collections.yaml"),
        validation_alias=AliasChoices("COLLECTIONS_FILE", "BOT_COLLECTIONS_FILE"),
    )
