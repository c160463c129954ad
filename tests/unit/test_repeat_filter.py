"""Repeated client log lines: the first of a window passes, the rest are counted into the next."""

from __future__ import annotations

import logging

from streams.logs import RepeatFilter


def _record(name: str, msg: str, created: float, level: int = logging.ERROR) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    record.created = created
    return record


def test_repeats_in_a_window_are_counted_into_one_summary_line() -> None:
    quiet = RepeatFilter(window_s=10.0)
    message = "Unable connect to node with id %s: %s"
    assert quiet.filter(_record("aiokafka.conn", message, 0.0))
    assert not any(quiet.filter(_record("aiokafka.conn", message, t / 10)) for t in range(1, 90))
    summary = _record("aiokafka.conn", message, 12.0)
    assert quiet.filter(summary)
    assert str(summary.msg).endswith("[89 similar lines suppressed in the last 12 s]")
    # The next window starts afresh.
    assert not quiet.filter(_record("aiokafka.conn", message, 13.0))


def test_other_messages_levels_and_our_own_lines_pass() -> None:
    quiet = RepeatFilter(window_s=10.0)
    assert quiet.filter(_record("aiokafka.conn", "a", 0.0))
    assert quiet.filter(_record("aiokafka.conn", "b", 0.1))  # another message
    assert quiet.filter(_record("aiokafka.fetcher", "a", 0.2))  # another logger
    for t in range(5):  # the project's own lines are never suppressed
        assert quiet.filter(_record("streams.sink.runner", "a", 0.3 + t))
    for t in range(5):  # nor the client's debug and info lines
        assert quiet.filter(_record("aiokafka.conn", "a", 0.3 + t, logging.INFO))


def test_aiohttp_request_errors_are_summarised() -> None:
    """A malformed request makes aiohttp log a traceback before any token check."""
    quiet = RepeatFilter(window_s=10.0)
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access"):
        assert quiet.filter(_record(name, "Error handling request", 0.0))
        assert not quiet.filter(_record(name, "Error handling request", 0.1))
