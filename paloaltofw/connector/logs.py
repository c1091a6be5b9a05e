"""Logging: a rotating log file and stderr, with known secrets masked in every record.

Secrets are kept out of log calls in the first place (they travel as `settings.Secret`); the
redaction filter is the second line of defence for anything that slips through, such as a
device echoing a value back in an error message.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Iterable, List, Optional
from urllib.parse import quote

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"


class RedactSecrets(logging.Filter):
    """Replaces every known secret (and its URL-encoded form) with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: List[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for value in secrets:
            if value and len(value) >= 4:
                self._secrets.extend({value, quote(value, safe="")})
        self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._secrets:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = self.redact(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(
                    record.exc_info))
                record.exc_info = None
        return True


def setup(level: str, stderr_level: int, file: Optional[str] = None,
          max_bytes: int = 10 * 1024 * 1024, backup_count: int = 5,
          redact: Optional[RedactSecrets] = None) -> RedactSecrets:
    """Configure the root logger; returns the redaction filter so secrets can be added once
    the configuration (and its decrypted values) is known."""
    redact = redact or RedactSecrets()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(stderr_level)
    console.setFormatter(logging.Formatter(FORMAT))
    console.addFilter(redact)
    root.addHandler(console)
    if file:
        os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes,
                                                       backupCount=backup_count,
                                                       encoding="utf-8")
        handler.setLevel(getattr(logging, level, logging.INFO))
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(redact)
        root.addHandler(handler)
    # urllib3 logs full URLs at DEBUG; keep it at INFO so no query string ever reaches a log.
    logging.getLogger("urllib3").setLevel(logging.INFO)
    # python-gnupg logs decrypted data at DEBUG ("chunk: …").
    logging.getLogger("gnupg").setLevel(logging.ERROR)
    return redact
