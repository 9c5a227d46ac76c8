"""Logging for services: native journald entries under systemd, plain lines on stderr otherwise.

Structured fields are passed as ``extra={"DEVICE_ID": ...}`` with upper-case names; journald
stores them as fields, the stderr format appends them as ``KEY=value``.
"""

from __future__ import annotations

import logging
import os
import sys

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to journald (JOURNAL_STREAM names stderr's inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


class FieldsFormatter(logging.Formatter):
    """``time level logger: message KEY=value ...`` for a terminal or a test's captured stderr."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in record.__dict__.items()
                  if k not in _STANDARD_ATTRS and k.isupper()]
        return f"{line} {' '.join(fields)}" if fields else line


def setup_logging(identifier: str, level: str = "info") -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if stderr_is_journal():
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(FieldsFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter (aiohttp access, asyncio debug) stays at warning.
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
