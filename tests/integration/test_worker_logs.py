"""The worker's logs: JSON lines on request, and the startup line naming what it runs against."""

from __future__ import annotations

import socket
import time

import orjson


def test_json_logs_carry_the_startup_fields(pipeline) -> None:
    worker = pipeline.worker("json", CCI_LOG_FORMAT="json", CCI_RETAIN_MONTHS="6")
    worker.stop()
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    (startup,) = [e for e in entries if e["message"].startswith("cci worker starting")]
    assert startup["broker"] == pipeline.bootstrap
    assert startup["app_id"] == "cci"
    assert startup["timezone"] == "UTC"
    assert startup["store"].startswith("chdb://")
    assert startup["retain_months"] == 6
    assert {e["level"] for e in entries} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def test_malformed_requests_leave_a_bounded_log(pipeline) -> None:
    """aiohttp logs a traceback per malformed request (two Host headers: ~800 bytes each)."""
    worker = pipeline.worker("flood", CCI_WEB_TOKEN="flood-token-0123456789abcdef")
    before = worker.log_path.stat().st_size
    malformed = (
        b"GET /api/cci HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
        b"Connection: close\r\n\r\n"
    )
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as connection:
            connection.sendall(malformed)
            answer = connection.recv(4096)
            assert b" 400 " in answer.split(b"\r\n", 1)[0], answer
    time.sleep(1.0)  # the last lines are written
    grown = worker.log_path.stat().st_size - before
    assert grown < 20_000, f"{grown} bytes:\n{worker.log_tail(30)}"
