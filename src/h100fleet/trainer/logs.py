"""Logging for journald: one line per record on stderr.

Under systemd (JOURNAL_STREAM is set) each line starts with a syslog priority prefix such as `<6>`, which journald
turns into the entry's priority (`journalctl -p warning` then shows warnings and errors only), and carries no
timestamp (journald adds one). Elsewhere lines carry an ISO timestamp and the level name. Newlines inside a message
or a traceback are folded into ` | ` so that one event is one journal line.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class OneLineFormatter(logging.Formatter):
    def __init__(self, journald: bool, prefix: str = ""):
        super().__init__()
        self.journald = journald
        self.prefix = prefix  # "rank 3: " on torchrun's ranks other than 0

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        message = self.prefix + " | ".join(line.rstrip() for line in message.splitlines() if line.strip())
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{record.name}: {message}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname} {record.name}: {message}"


def setup(level: int = logging.INFO) -> logging.Logger:
    """Configure the `h100fleet.trainer` logger (idempotent) and return it. Under torchrun the ranks other than 0
    log warnings and errors only, prefixed with their rank: rank 0 tells the job's story once
    (H100FLEET_TRAINER_LOG_RANKS=all: every rank logs everything, for debugging and the tests)."""
    logger = logging.getLogger("h100fleet.trainer")
    rank = os.environ.get("RANK", "0").strip() or "0"
    prefix = "" if rank == "0" else f"rank {rank}: "
    quiet = prefix and os.environ.get("H100FLEET_TRAINER_LOG_RANKS", "") != "all"
    logger.setLevel(max(level, logging.WARNING) if quiet else level)
    logger.propagate = False
    if not any(getattr(h, "_h100fleet", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter(journald=bool(os.environ.get("JOURNAL_STREAM")), prefix=prefix))
        handler._h100fleet = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


def get(name: str = "") -> logging.Logger:
    return logging.getLogger("h100fleet.trainer" + (f".{name}" if name else ""))
