"""The worker's logs: JSON lines on request, and the startup line naming what it runs against."""

from __future__ import annotations

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
