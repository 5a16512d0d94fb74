"""Settings of `python -m ingestion sync` (SYNC_*; the sources are in COLLECTIONS_FILE)."""

import re
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(value: str) -> float:
    """Seconds from "90", "30s", "15m", "1h" or "1d"; ValueError saying what is accepted."""
    match = _INTERVAL.fullmatch(value.strip().lower())
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ValueError(f"not an interval: {value!r} (use e.g. 30s, 15m, 1h or 1d)")
    return seconds


class SyncSettings(BaseSettings):
    """How often `--every` syncs, and where crawls keep their state."""

    model_config = SettingsConfigDict(
        env_prefix="SYNC_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # The interval of `sync --every` given without one.
    every: str = "15m"
    # A web source's validators and links between crawls (so unchanged pages are not fetched).
    state_dir: Path = Path("data/sync")

    @field_validator("every")
    @classmethod
    def _interval(cls, value: str) -> str:
        parse_interval(value)
        return value
