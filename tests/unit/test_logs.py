"""JSON log lines: one object per record, extra fields kept, exceptions included."""

from __future__ import annotations

import logging
import sys

import orjson

from streams.logs import JsonFormatter, logging_config


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("streams", logging.WARNING, "x.py", 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_a_record_is_one_json_object_with_its_extra_fields() -> None:
    line = JsonFormatter().format(record("lag %d", 5, app_id="cci", partitions=4))
    entry = orjson.loads(line)
    assert entry["message"] == "lag 5"
    assert entry["level"] == "WARNING" and entry["logger"] == "streams"
    assert entry["app_id"] == "cci" and entry["partitions"] == 4
    assert entry["ts"].endswith("+00:00")
    assert "\n" not in line


def test_exceptions_are_kept_in_the_object() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = record("failed")
        entry.exc_info = sys.exc_info()
    assert "ValueError: boom" in orjson.loads(JsonFormatter().format(entry))["exception"]


def test_text_format_keeps_fausts_own_config() -> None:
    assert logging_config("text", "INFO") is None
    config = logging_config("json", "DEBUG")
    assert config is not None and config["root"]["level"] == "DEBUG"
