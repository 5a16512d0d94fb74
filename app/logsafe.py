"""No secret reaches a log line: one logging.Filter on the root logger's handlers replaces every
configured secret, and anything shaped like a bot token or a URL password, in the message, its
arguments and the formatted traceback (an aiohttp error carries the file URL, token included).

Installed at start (`install`); the secrets come from the settings objects (`secrets_of`)."""

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
# Bot API URLs carry the token after "bot" (/bot123:AA.../getFile, /file/bot123:AA.../path).
_BOT_TOKEN = re.compile(r"bot\d+:[\w-]+")
# A token on its own: Telegram's are digits, a colon and 35 characters.
_BARE_TOKEN = re.compile(r"\b\d{6,}:[\w-]{30,}")
# The password of a URL (redis://:password@host, https://user:password@host).
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^/\s@]+@")
# Shorter values would mask ordinary words; a URL's password is masked by its shape anyway.
_MIN_SECRET = 4


def secrets_of(*configs: object) -> set[str]:
    """Every secret in settings objects: SecretStr values, and passwords of *_url fields
    (pydantic models and dataclasses of them are walked)."""
    found: set[str] = set()
    for config in configs:
        for name, value in _fields(config):
            if isinstance(value, SecretStr):
                found.add(value.get_secret_value())
            elif isinstance(value, str) and name.endswith("url"):
                password = urlsplit(value).password
                if password:
                    found.add(password)
            elif isinstance(value, BaseModel) or is_dataclass(value):
                found |= secrets_of(value)
    return {s for s in found if len(s) >= _MIN_SECRET}


def _fields(config: object) -> Iterable[tuple[str, object]]:
    if isinstance(config, BaseModel):
        return ((name, getattr(config, name)) for name in type(config).model_fields)
    if is_dataclass(config) and not isinstance(config, type):
        return ((f.name, getattr(config, f.name)) for f in fields(config))
    return ()


class RedactSecrets(logging.Filter):
    """Rewrites each record it sees with its secrets masked (it never drops a record)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these too (the longest first, so that no part of one survives)."""
        merged = set(self._secrets) | {s for s in secrets if len(s) >= _MIN_SECRET}
        self._secrets = sorted(merged, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """The text with every secret, bot token and URL password replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _BOT_TOKEN.sub("bot" + MASK, text)
        text = _BARE_TOKEN.sub(MASK, text)
        return _URL_PASSWORD.sub(r"\1" + MASK + "@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the message (arguments merged in), the traceback and the stack."""
        rewrite_record(record, self.redact)
        return True


def rewrite_record(record: logging.LogRecord, redact: Callable[[str], str]) -> None:
    """Rewrite a log record in place through redact: its message (arguments merged in), its
    traceback (formatted now: formatters print exc_text when there is no exc_info) and its
    stack. Shared by every filter that masks log lines (secrets here, personal data in
    app.pii.logs)."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the format
        message = f"{record.msg} {record.args}"
    record.msg, record.args = redact(message), None
    if record.exc_info:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install(secrets: Iterable[str] = (), logger: logging.Logger | None = None) -> RedactSecrets:
    """Put the filter on every handler of the root logger (or `logger`), or add the secrets to
    the one already there; returns it. Call it after logging is configured."""
    target = logging.getLogger() if logger is None else logger
    secrets = list(secrets)
    installed: RedactSecrets | None = None
    for handler in target.handlers:
        existing = next((f for f in handler.filters if isinstance(f, RedactSecrets)), None)
        if existing is None:
            existing = installed or RedactSecrets()
            handler.addFilter(existing)
        existing.add(secrets)
        installed = installed or existing
    if installed is None:  # no handler yet: the filter is returned for the caller to use
        installed = RedactSecrets(secrets)
    return installed


# Fields a record may carry in `extra` that a JSON line shows as its own keys.
JSON_FIELDS = ("trace_id", "outcome", "latency_ms", "steps_ms", "collections", "cached")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json): time, level, logger, message, the fields of
    JSON_FIELDS a record carries, and the traceback. Secrets are masked before this runs (the
    filter rewrites the message and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JSON_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def use_json(logger: logging.Logger | None = None) -> None:
    """Format every handler of the root logger (or `logger`) as JSON lines."""
    target = logging.getLogger() if logger is None else logger
    for handler in target.handlers:
        handler.setFormatter(JsonFormatter())
