"""Settings of the answer side, one class per concern (LLM_*, LANGFUSE_*, CHAIN_*, PII_*).

The knowledge base's own settings (QDRANT_*, EMBEDDING_*, SEARCH_*) live in kb.settings.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.ab.variants import Variant, parse_variants
from kb.settings import (
    EmbeddingSettings,
    QdrantSettings,
    SearchSettings,
    load_settings,
)

STEPS = ("paraphrase", "relevance", "clarify", "answer")


class LLMSettings(BaseSettings):
    """The language model: an OpenAI-compatible server (vLLM) when base_url is set, otherwise
    llama.cpp in process with the bundled Gemma 3 270M (or gguf_path)."""

    model_config = SettingsConfigDict(
        env_prefix="LLM_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = ""
    # Bounded waits: connecting, and the whole request (a long answer included).
    connect_timeout_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    # Retries on connection errors, timeouts and 5xx, with exponential backoff.
    retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0)
    # Used when the primary keeps failing (after its retries).
    fallback_base_url: str | None = None
    fallback_model: str = ""
    fallback_api_key: SecretStr | None = None
    # Per-step endpoint and model; unset means the main one.
    paraphrase_base_url: str | None = None
    paraphrase_model: str = ""
    paraphrase_api_key: SecretStr | None = None
    relevance_base_url: str | None = None
    relevance_model: str = ""
    relevance_api_key: SecretStr | None = None
    clarify_base_url: str | None = None
    clarify_model: str = ""
    clarify_api_key: SecretStr | None = None
    answer_base_url: str | None = None
    answer_model: str = ""
    answer_api_key: SecretStr | None = None
    # Embedded llama.cpp: a GGUF file (empty: the bundled Gemma 3 270M), context and threads.
    gguf_path: Path | None = None
    n_ctx: int = Field(default=8192, ge=512)
    n_threads: int | None = Field(default=None, ge=1)
    # Run the embedded model once in a child process at start: a crash there (a CPU fault)
    # is then a clear log line, not a dead process.
    probe: bool = True

    @model_validator(mode="after")
    def _model_with_server(self) -> "LLMSettings":
        if self.base_url and not self.model:
            raise ValueError("LLM_MODEL must name the served model when LLM_BASE_URL is set")
        if self.fallback_base_url and not (self.fallback_model or self.model):
            raise ValueError("LLM_FALLBACK_MODEL is needed with LLM_FALLBACK_BASE_URL")
        return self


class LangfuseSettings(BaseSettings):
    """Tracing and prompt management; off unless both keys are set."""

    model_config = SettingsConfigDict(
        env_prefix="LANGFUSE_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    public_key: str | None = None
    secret_key: SecretStr | None = None
    base_url: str = Field(
        default="http://localhost:3000",
        validation_alias=AliasChoices("LANGFUSE_BASE_URL", "LANGFUSE_HOST"),
    )
    environment: str | None = None
    # Prompt management: which label overrides the files, how often it is looked up again,
    # and how long one lookup may take (it never runs on a user's request).
    prompt_label: str = "production"
    prompt_refresh_s: float = Field(default=60.0, gt=0)
    prompt_fetch_timeout_s: float = Field(default=2.0, gt=0)

    @property
    def enabled(self) -> bool:
        """Both keys are set."""
        return bool(self.public_key and self.secret_key and self.secret_key.get_secret_value())


class PromptSettings(BaseSettings):
    """Prompt A/B (PROMPT_VARIANTS): per prompt, the labels users are split between and their
    weights, "answer=production:50,prod-b:50;clarify=production:90,prod-b:10" (app/ab)."""

    model_config = SettingsConfigDict(
        env_prefix="PROMPT_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    variants: str = ""

    @field_validator("variants")
    @classmethod
    def _valid_variants(cls, value: str) -> str:
        parse_variants(value)
        return value

    @property
    def parsed(self) -> dict[str, tuple[Variant, ...]]:
        """The variants by prompt name."""
        return parse_variants(self.variants)


class ChainSettings(BaseSettings):
    """The answer chain: how much is retrieved and how much of it the LLM sees."""

    model_config = SettingsConfigDict(
        env_prefix="CHAIN_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    top_k: int = Field(default=6, ge=1, le=50)
    # Context handed to the LLM, in tokens (about 4 characters each).
    context_tokens: int = Field(default=1500, ge=100)
    # Chat turns (a question and its answer each) the paraphrase step sees.
    history_turns: int = Field(default=3, ge=0, le=20)
    # Below this fused score of the best hit the chain answers "not found" without asking the
    # LLM (0 disables the shortcut).
    min_score: float = Field(default=0.2, ge=0.0, le=1.0)
    # Add the chunks just before and after the best hits to the context.
    neighbours: bool = True
    prompts_dir: Path = Path(__file__).resolve().parent.parent / "prompts"
    # How answers are written: "generate" (the model writes them, citing the excerpts),
    # "quote" (only sentences copied from the excerpts, prompts/answer_quote.md), or "auto":
    # quote on the embedded llama.cpp model, generate on an LLM server.
    answer_mode: Literal["auto", "generate", "quote"] = "auto"
    # The embedded model's verdicts (prompts/question.md): an excerpt answers the question
    # when it makes the question this much likelier (mean log-probability per token) ...
    question_gain: float = Field(default=0.6, ge=0.0)
    # ... and the chain asks back only when a second excerpt does nearly as well (within
    # this much of the best): one clearly dominating document needs no clarification.
    question_gain_margin: float = Field(default=0.4, ge=0.0)


PiiMode = Literal["off", "traces", "traces+llm"]


class PiiSettings(BaseSettings):
    """Personal-data masking (PII_MASK): off; traces (Langfuse, logs that install it); or
    traces+llm (also what is sent to the LLM, with the values restored in the answer)."""

    model_config = SettingsConfigDict(
        env_prefix="PII_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    mask: PiiMode = "traces"

    @property
    def traces(self) -> bool:
        """Whatever reaches Langfuse (and logs) is masked."""
        return self.mask != "off"

    @property
    def llm(self) -> bool:
        """What is sent to the LLM is masked too."""
        return self.mask == "traces+llm"


class LoopSettings(BaseSettings):
    """The knowledge loop (LOOP_*): what is kept of unanswered questions, and for how long."""

    model_config = SettingsConfigDict(
        env_prefix="LOOP_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # Records of unanswered questions are deleted after this many days.
    retention_days: float = Field(default=90.0, gt=0)
    # Keep who asked (Telegram user id) with each record; off: records are anonymous.
    keep_users: bool = False
    # The language whose dense model groups the questions (ru: the multilingual default, so
    # one question asked in Russian and in English is one gap).
    language: Literal["en", "ru"] = "ru"


class CacheSettings(BaseSettings):
    """The answer cache (CACHE_*, app/cache): off; exact (the same normalised question in the
    same scope); or semantic (a paraphrase too, within a calibrated similarity and guards)."""

    model_config = SettingsConfigDict(
        env_prefix="CACHE_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    mode: Literal["off", "exact", "semantic"] = "semantic"
    # A cached answer is served this long at most (new documents reach answers by then).
    ttl_hours: float = Field(default=24.0, gt=0)
    # Cosine a paraphrase needs (unset: the value calibrated for the cache's model by
    # bench/cache.py; a model with no calibration gets the exact tier only).
    semantic_threshold: float | None = Field(default=None, gt=0.0, le=1.0)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every concern's settings, read once at start-up."""

    qdrant: QdrantSettings
    embedding: EmbeddingSettings
    search: SearchSettings
    llm: LLMSettings
    langfuse: LangfuseSettings
    chain: ChainSettings
    pii: PiiSettings = field(default_factory=PiiSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)

    @classmethod
    def load(cls) -> "Settings":
        """From the environment and .env; raises ConfigurationError naming a bad variable."""
        return cls(
            qdrant=load_settings(QdrantSettings),
            embedding=load_settings(EmbeddingSettings),
            search=load_settings(SearchSettings),
            llm=load_settings(LLMSettings),
            langfuse=load_settings(LangfuseSettings),
            chain=load_settings(ChainSettings),
            pii=load_settings(PiiSettings),
            loop=load_settings(LoopSettings),
            prompts=load_settings(PromptSettings),
            cache=load_settings(CacheSettings),
        )
