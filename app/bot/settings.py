"""Settings of the bot (BOT_*, plus TELEGRAM_API_URL, REDIS_URL and COLLECTIONS_FILE)."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that example files and tutorials use for secrets; a bot never starts with one.
PLACEHOLDERS = frozenset(
    {"", "change-me", "changeme", "replace-me", "your-token", "your_bot_token", "token",
     "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11", "secret", "password"}
)  # fmt: skip


def is_placeholder(value: str) -> bool:
    """A value copied from an example instead of a real secret."""
    lowered = value.strip().lower()
    return lowered in PLACEHOLDERS or lowered.startswith(("change", "your-", "<"))


class BotSettings(BaseSettings):
    """The Telegram bot: its token, who administers it, how it talks to Telegram, its limits."""

    model_config = SettingsConfigDict(
        env_prefix="BOT_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    token: SecretStr = SecretStr("")
    # Telegram user ids that may do everything (comma-separated).
    admins: Annotated[frozenset[int], NoDecode] = frozenset()
    # Another Bot API server (self-hosted, for files over 20 MB; or a test's fake).
    telegram_api_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_API_URL", "BOT_TELEGRAM_API_URL")
    )
    # Conversation state: memory by default, Redis (shared by replicas) when set.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "BOT_REDIS_URL")
    )
    # Redis's password (requirepass) when REDIS_URL carries none.
    redis_password: SecretStr | None = None
    collections_file: Path = Field(
        default=Path("collections.yaml"),
        validation_alias=AliasChoices("COLLECTIONS_FILE", "BOT_COLLECTIONS_FILE"),
    )
    # Webhook mode when a public URL is set; long polling otherwise.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # All interfaces: in a container, the published port decides what is reachable.
    webhook_host: str = "0.0.0.0"
    webhook_port: int = Field(default=8080, ge=1, le=65535)
    # How long a chat's choice and history are kept (seconds).
    state_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # Question-answer turns kept per chat.
    history_turns: int = Field(default=3, ge=0, le=20)
    # Questions per user per minute; chain runs at once per process (the rest wait).
    rate_limit_per_minute: int = Field(default=10, ge=1)
    max_concurrent_chains: int = Field(default=128, ge=1)
    # Seconds between updates of a streamed answer: drafts in private chats, edits elsewhere.
    draft_interval_s: float = Field(default=0.5, ge=0.1)
    edit_interval_s: float = Field(default=1.5, ge=0.2)
    # Final answers as rich messages (footnotes for citations) where Telegram takes them, HTML
    # elsewhere; "off": HTML always.
    rich_messages: Literal["auto", "off"] = "auto"
    # Largest document the Bot API lets a bot download (20 MB on Telegram's cloud API).
    max_download_mb: int = Field(default=20, ge=1)
    # Seconds a getChatMember answer counts for "members_of" readers (0: ask every time), and
    # between checks of the collections file for changes.
    membership_ttl_s: float = Field(default=300.0, ge=0)
    collections_reload_s: float = Field(default=5.0, ge=0)
    # Seconds any Redis call (connect or command) may take; a hung Redis then fails fast.
    redis_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # Telegram unreachable at start: retry after this many seconds, doubling up to the cap.
    start_retry_s: float = Field(default=1.0, gt=0)
    start_retry_max_s: float = Field(default=60.0, gt=0)
    # The LLM server not ready at start (vLLM loading its model): wait this long at most,
    # with the backoff above, then start anyway (0: do not wait).
    llm_wait_s: float = Field(default=600.0, ge=0)
    # The knowledge loop (app/loop): how experts and support staff see who asks ("anonymous":
    # a stable pseudonym; "name": the Telegram name), where 👎 review cards go (a chat id),
    # seconds before an unanswered escalation is reminded (0: never), and the golden set the
    # review chat adds to (JSONL; and a Langfuse dataset of this name when tracing is on).
    asker_identity: Literal["anonymous", "name"] = "anonymous"
    review_chat: int | None = None
    escalation_remind_s: float = Field(default=4 * 3600.0, ge=0)
    # The owners' weekly digest of unanswered questions: a weekday (mon..sun) or off, and the
    # hour (UTC) it goes out from.
    digest_weekday: Literal["off", "mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "off"
    digest_hour: int = Field(default=9, ge=0, le=23)
    golden_file: Path = Path("data/golden-feedback.jsonl")
    golden_dataset: str = "feedback"

    @field_validator("admins", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(
                int(part) for part in value.replace(";", ",").split(",") if part.strip()
            )
        if isinstance(value, int):
            return frozenset({value})
        return value

    @model_validator(mode="after")
    def _real_secrets(self) -> "BotSettings":
        if self.webhook_url and (
            self.webhook_secret is None or is_placeholder(self.webhook_secret.get_secret_value())
        ):
            raise ValueError("BOT_WEBHOOK_SECRET must be set (a random string) in webhook mode")
        if self.redis_password is not None and is_placeholder(
            self.redis_password.get_secret_value()
        ):
            raise ValueError("BOT_REDIS_PASSWORD is a placeholder: set the real password")
        return self

    def require_token(self) -> str:
        """The token, or ValueError when it is unset or a placeholder."""
        token = self.token.get_secret_value()
        if is_placeholder(token) or ":" not in token:
            raise ValueError("BOT_TOKEN is unset or a placeholder: put the token from @BotFather")
        return token
