"""Worker log output: Faust's text lines, or one JSON object per line for log collectors."""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields, "exception"?}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_text:  # already formatted (and redacted: streams/redaction.py)
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """The worker's ``logging_config``: None keeps Faust's text format."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "level": level,
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


# --- repeated client errors ----------------------------------------------------------------------

# Loggers of the Kafka client and the stream framework: without a broker they repeat the same
# error many times a second (about 36 KB of log a second, mostly tracebacks).
# aiohttp logs a traceback for each malformed request (before any token check): anyone who can
# reach the port could otherwise write ~800 bytes of log per request.
CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "asyncio", "aiohttp")
REPEAT_WINDOW_S = 10.0


class RepeatFilter(logging.Filter):
    """Passes the first record of each (logger, level, message template) per window and counts
    the rest; the first one passed after a window that suppressed some says how many.

    Applies to ``CLIENT_LOGGERS`` only: the project's own lines are few and all kept.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        # key → (start of its window, records suppressed in it)
        self._windows: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(CLIENT_LOGGERS) or record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        started, suppressed = self._windows.get(key, (None, 0))
        if started is not None and record.created - started < self.window_s:
            self._windows[key] = (started, suppressed + 1)
            return False
        if len(self._windows) > 1000:  # many distinct messages: start counting afresh
            self._windows.clear()
        self._windows[key] = (record.created, 0)
        if suppressed:
            record.msg = (
                f"{record.msg} [{suppressed} similar lines suppressed in the last "
                f"{record.created - started:.0f} s]"  # type: ignore[operator]
            )
        # The traceback of a repeat adds nothing; the first one of the run was logged whole.
        if started is not None:
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_repeats(window_s: float = REPEAT_WINDOW_S) -> None:
    """Install one ``RepeatFilter`` on every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter(window_s))
