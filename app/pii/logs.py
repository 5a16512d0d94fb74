"""Personal data out of log lines: a logging.Filter that masks each record's message (its
arguments merged in) and traceback. It stands beside app.logsafe's RedactSecrets on the same
handlers; either order works, as both rewrite the record in place."""

import logging
import threading

from app.logsafe import rewrite_record
from app.pii.masker import Masker


def mask_record(record: logging.LogRecord, masker: Masker) -> None:
    """Rewrite a record with its personal data masked: message, traceback, stack."""
    rewrite_record(record, masker.redact)


class MaskPii(logging.Filter):
    """Masks the personal data of each record it sees (it never drops a record)."""

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker
        # Presidio may log while it masks a record: that record is its own, not a user's,
        # and masking it would recurse.
        self._busy = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; always keep it."""
        if getattr(self._busy, "on", False):
            return True
        self._busy.on = True
        try:
            mask_record(record, self.masker)
        finally:
            self._busy.on = False
        return True


def install(masker: Masker, logger: logging.Logger | None = None) -> MaskPii:
    """Put one MaskPii on every handler of the root logger (or `logger`), once; returns it.
    Call it after logging is configured, like app.logsafe.install."""
    target = logging.getLogger() if logger is None else logger
    installed = MaskPii(masker)
    for handler in target.handlers:
        existing = next((f for f in handler.filters if isinstance(f, MaskPii)), None)
        if existing is not None:
            installed = existing
            continue
        handler.addFilter(installed)
    return installed
