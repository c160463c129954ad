"""``cci soak`` end to end, tiny: the worker's simulated clock really moves, so retention really
expires state (held user-months fall back to the window), and the JSON carries every figure.

Memory is not asserted: at this size RSS is noise; it belongs to the soak's report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.harness import TEST_SESSION_TIMEOUT, run_cci
from tests.integration.test_bench import PID, running

USERS = 300
RETAIN = 2


def test_soak_expires_months_under_the_simulated_clock_and_reports_each_month(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCI_")}
    env["CCI_SESSION_TIMEOUT"] = TEST_SESSION_TIMEOUT  # its workers join their groups sooner

    result = run_cci(
        "soak",
        "--months",
        "4",
        "--retain-months",
        str(RETAIN),
        "--users",
        str(USERS),
        "--json",
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout)
    months = [s for s in report["samples"] if s["index"] > 0]
    assert [s["index"] for s in months] == [1, 2, 3, 4]
    # Consecutive calendar months, the first being the real one.
    labels = [s["month"] for s in months]
    assert labels == sorted(set(labels)) and labels[0] == report["started_at"][:7]
    # Held user-months grow to the window, then the oldest month expires each month.
    assert [s["user_months"] for s in months] == [USERS, 2 * USERS, 2 * USERS, 2 * USERS]
    assert all(s["user_months"] == s["expected_user_months"] for s in months)
    assert all(s["rss_bytes"] > 0 and s["state_bytes"] > 0 for s in months)
    assert all(s["store_bytes"] > 0 for s in months)  # the worker answered the store query
    assert report["dead_letters"] == 0  # no event judged against the real clock
    flat = report["flatness"]
    assert flat["from_month"] == labels[RETAIN - 1] and flat["to_month"] == labels[-1]
    assert set(flat) >= {
        "growth_bytes",
        "growth_pct",
        "slope_bytes_per_month",
        "late_slope_bytes_per_month",
        "flat",
    }

    # Broker and worker announced their pids, and neither outlives the command.
    pids = {int(pid) for pid in PID.findall(result.stderr)}
    assert len(pids) == 2, result.stderr
    assert not [pid for pid in pids if running(pid)]
    assert (tmp_path / ".cci" / "soak" / "worker.log").exists()
