"""Settings of operations: the health and metrics server, logs, and retention of traces."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OpsSettings(BaseSettings):
    """HEALTH_PORT, LOG_FORMAT, LOG_QUESTIONS, TRACE_RETENTION_DAYS, RETENTION_INTERVAL_H."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # /healthz, /readyz and /metrics are served on this port in both modes (0: not served).
    health_port: int = Field(default=8081, ge=0, le=65535)
    health_host: str = "0.0.0.0"
    # "json": one JSON object per log line (for a log collector); "text": plain lines.
    log_format: Literal["text", "json"] = "text"
    # The question's text in its log line (masked by PII_MASK); off: trace id and outcome only.
    log_questions: bool = False
    # Langfuse traces older than this many days are deleted (0: kept as long as Langfuse does).
    trace_retention_days: float = Field(default=90.0, ge=0)
    # Hours between retention runs inside the bot (0: only `python -m app retention`).
    retention_interval_h: float = Field(default=6.0, ge=0)
