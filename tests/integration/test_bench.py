"""``cci bench`` end to end on a small run: every phase, the peer included, checked against the
batch recount by the command's own exit status, and nothing it started left running.

Speeds are not asserted: they belong to the bench's report, not to a test.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.integration.harness import TEST_SESSION_TIMEOUT, run_cci

PID = re.compile(r"pid (\d+)")
BENCH_TIMEOUT_S = 240.0


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_bench_measures_every_phase_and_each_result_equals_the_recount(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCI_")}
    env["CCI_SESSION_TIMEOUT"] = TEST_SESSION_TIMEOUT  # its workers join their groups sooner

    result = run_cci(
        "bench",
        "--events",
        "20000",
        "--offered-rate",
        "1000",
        "--latency-seconds",
        "2",
        "--json",
        env=env,
        cwd=tmp_path,
        # Only a guard against a hang: its speed is not asserted, and in `make test` it shares
        # the machine with the other test processes (it took 60 s alone, over 120 s beside them
        # on a loaded machine).
        timeout=BENCH_TIMEOUT_S,
    )

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout)
    assert report["exact"] is True
    assert report["run"]["events"] == 20_000
    assert report["run"]["activity_events"] + report["run"]["ticket_events"] == 20_000
    assert report["pipeline"]["exact"] and report["pipeline"]["clickhouse_exact"]
    assert report["peer"]["exact"] and report["peer"]["name"] == "Quix Streams"
    latency = report["latency"]
    assert latency["exact"] and latency["events"] == 2000 and latency["visible"] == 2000
    assert 0 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    for measured in (report["ceiling"], report["pipeline"], report["peer"]):
        assert measured["events_per_s"] > 0
    for process in (report["pipeline"], report["peer"]):
        assert process["peak_rss_bytes"] > 0
    assert report["pipeline"]["user_months_gauge"] == report["run"]["user_months"]
    assert report["pipeline"]["dedup_state_bytes_gauge"] > 0
    assert report["ratios"]["pipeline_vs_peer"] > 0

    # Broker, peer and worker: each announced its pid, and none outlives the command.
    pids = {int(pid) for pid in PID.findall(result.stderr)}
    assert len(pids) == 3, result.stderr
    assert not [pid for pid in pids if running(pid)]
    assert (tmp_path / ".cci" / "bench" / "worker.log").exists()
