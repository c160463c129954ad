"""`cci query` and `cci report` as a user runs them with no worker: the CLI opens the embedded
store itself (the worker-running case is in test_clickhouse_pipeline.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams import domain
from tests.integration.harness import store_with_figures

FIGURES = {  # (month, dimension, segment) → (tickets, active users)
    ("2026-01", "all", "all"): (30, 100),
    ("2026-02", "all", "all"): (45, 90),
    ("2026-01", "plan", "free"): (25, 50),
    ("2026-02", "plan", "free"): (40, 50),
    ("2026-02", "plan", "paid"): (5, 40),
    ("2026-02", "tenure", "new"): (9, 0),
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    figures = {(domain.month_from_label(m), d, s): c for (m, d, s), c in FIGURES.items()}
    return store_with_figures(tmp_path, figures, datetime(2026, 2, 20, tzinfo=UTC))


def cci(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_query_prints_a_table_jsonl_or_csv(env: dict[str, str]) -> None:
    sql = (
        "SELECT month, segment, cci FROM cci_segment_monthly FINAL "
        "WHERE dimension = 'plan' ORDER BY month, segment"
    )

    table = cci("query", sql, env=env)
    jsonl = cci("query", "--format", "jsonl", sql, env=env)
    as_csv = cci("query", "--format", "csv", sql + ";", env=env)

    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["month", "segment", "cci"]
    assert table.stdout.splitlines()[2].split() == ["2026-01-01", "free", "0.5"]
    assert table.stdout.splitlines()[-1] == "(3 rows)"
    assert [orjson.loads(line) for line in jsonl.stdout.splitlines()] == [
        {"month": "2026-01-01", "segment": "free", "cci": 0.5},
        {"month": "2026-02-01", "segment": "free", "cci": 0.8},
        {"month": "2026-02-01", "segment": "paid", "cci": 0.125},
    ]
    assert as_csv.stdout.splitlines() == [
        "month,segment,cci",
        "2026-01-01,free,0.5",
        "2026-02-01,free,0.8",
        "2026-02-01,paid,0.125",
    ]


def test_report_shows_the_latest_month_with_its_change(env: dict[str, str]) -> None:
    latest = cci("report", env=env)
    january = cci("report", "--month", "2026-01", "--dimension", "plan", env=env)

    assert latest.returncode == 0, latest.stderr
    lines = latest.stdout.splitlines()
    assert lines[0] == "Customer Contact Index, 2026-02 (change from 2026-01)"
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[4:] if line.strip()}
    # Each rate with its band against the default target range, 20–30% (stored by the sink).
    assert rows[("all", "all")] == [
        "45", "90", "0.5000", "50.00", "above", "0.3000", "+0.2000", "+66.7%"
    ]  # fmt: skip
    assert rows[("plan", "free")] == [
        "40", "50", "0.8000", "80.00", "above", "0.5000", "+0.3000", "+60.0%"
    ]  # fmt: skip
    assert rows[("plan", "paid")] == ["5", "40", "0.1250", "12.50", "below"]  # no January figure
    assert rows[("tenure", "new")] == ["9", "0", "-", "-", "-"]
    assert january.stdout.splitlines()[4].split()[:7] == [
        "plan", "free", "25", "50", "0.5000", "50.00", "above"
    ]  # fmt: skip
    assert january.stdout.splitlines()[0].endswith("2026-01 (change from 2025-12)")
    assert [line.split()[:2] for line in january.stdout.splitlines()[4:]] == [["plan", "free"]]


def test_failures_exit_non_zero_with_the_reason(env: dict[str, str], tmp_path: Path) -> None:
    bad_sql = cci("query", "SELEC month FROM cci_segment_monthly", env=env)
    writes = cci("query", "INSERT INTO cci_segment_monthly (segment) VALUES ('x')", env=env)
    bad_month = cci("report", "--month", "February", env=env)
    no_store = cci("query", "SELECT 1", env={**env, "CCI_CLICKHOUSE_URL": f"chdb://{tmp_path}/no"})

    assert bad_sql.returncode == 1 and "SYNTAX_ERROR" in bad_sql.stderr
    assert writes.returncode == 1 and "only SELECT" in writes.stderr
    assert bad_month.returncode == 2 and "--month" in bad_month.stderr
    assert no_store.returncode == 1 and "no embedded store" in no_store.stderr
    assert not (tmp_path / "no").exists()
