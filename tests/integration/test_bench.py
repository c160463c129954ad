"""``cci bench`` end to end on a small run: every phase, the peer included, checked against the
batch recount by the command's own exit status, and nothing it started left running.

Speeds are not asserted: they belong to the bench's report, not to a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from streams.bench.peers import PEERS
from streams.bench.peers.environments import home_of, is_ready
from streams.bench.workload import Workload, bench_topics, load_inputs
from streams.dev.broker import EmbeddedBroker
from streams.kafka.admin import create_topics
from streams.settings import TOPIC_PROFILES, load_settings
from tests.integration.harness import TEST_SESSION_TIMEOUT, batch_sizes, run_cci

PID = re.compile(r"pid (\d+)")
BENCH_TIMEOUT_S = 240.0
PROFILES = 20_000  # ~30 bytes each: one 512 KiB batch per partition, then its last record


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_bench_loads_the_profile_table_in_few_batches() -> None:
    """The ingest's profile table follows ``user-profile`` for the whole run, and each fetch of an
    embedded-broker partition lists every batch it holds: loaded one record per batch (272,522
    after 1,000,000 events), it kept the broker near a core in the latency phase (p99 550 ms
    against 315 ms). Each partition's last batch holds one record: its reported end is true."""
    profiles = [b'{"user_id": "u-%d", "n": %d}' % (i, i) for i in range(PROFILES)]
    workload = Workload(
        activity=[b'{"user_id": "u-1"}'],
        tickets=[],
        profiles=profiles,
        users=PROFILES,
        now=datetime.now(UTC),
        expected={},
        user_months=0,
    )

    async def load(bootstrap: str) -> list[list[int]]:
        await create_topics(bootstrap, bench_topics(load_settings({}), []))
        await load_inputs(bootstrap, workload)
        return [
            await batch_sizes(bootstrap, TopicPartition(TOPIC_PROFILES, partition))
            for partition in range(load_settings({}).partitions)
        ]

    with EmbeddedBroker() as broker:
        batches = asyncio.run(load(broker.bootstrap))

    assert sum(map(sum, batches)) == PROFILES
    assert all(len(sizes) <= 3 and sizes[-1] == 1 for sizes in batches), batches


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
    [peer] = report["peers"]
    assert peer["exact"] and peer["name"] == "Quix Streams 3.28"
    latency = report["latency"]
    assert latency["exact"] and latency["events"] == 2000 and latency["visible"] == 2000
    assert 0 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    for measured in (report["ceiling"], report["pipeline"], peer):
        assert measured["events_per_s"] > 0
    for process in (report["pipeline"], peer):
        assert process["peak_rss_bytes"] > 0
        # Each first event is stamped by the process itself, on the clock of its output records.
        assert 0 < process["first_output_seconds"] <= process["seconds"]
    assert report["pipeline"]["user_months_gauge"] == report["run"]["user_months"]
    assert report["pipeline"]["dedup_state_bytes_gauge"] > 0
    assert report["ratios"]["pipeline_vs_fastest_peer"] > 0
    assert report["ratios"]["fastest_peer"] == "Quix Streams 3.28"

    # Broker, peer and worker: each announced its pid, and none outlives the command.
    pids = {int(pid) for pid in PID.findall(result.stderr)}
    assert len(pids) == 3, result.stderr
    assert not [pid for pid in pids if running(pid)]
    assert (tmp_path / ".cci" / "bench" / "worker.log").exists()


@pytest.mark.parametrize("name", ["bytewax", "pathway"])
def test_a_peer_in_its_own_environment_computes_the_recount(name: str, tmp_path: Path) -> None:
    """Bytewax and Pathway run from their own virtual environments; making one takes minutes and
    the network, so this runs only where ``make bench-peers`` has made it."""
    peer = PEERS[name]
    if not is_ready(peer):
        pytest.skip(f"{peer.title}'s environment {home_of(peer)} is not made: make bench-peers")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCI_")}
    env["CCI_SESSION_TIMEOUT"] = TEST_SESSION_TIMEOUT

    result = run_cci(
        "bench",
        "--events",
        "10000",
        "--skip-latency",
        "--peer",
        name,
        "--json",
        env=env,
        cwd=tmp_path,
        timeout=BENCH_TIMEOUT_S,
    )

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout)
    [measured] = report["peers"]
    assert measured["name"] == peer.title and measured["exact"] is True, measured["difference"]
    assert measured["events_per_s"] > 0 and measured["peak_rss_bytes"] > 0
    assert 0 < measured["first_output_seconds"] <= measured["seconds"]
    assert report["ratios"]["peers"][peer.title]["events_per_s"] > 0
    pids = {int(pid) for pid in PID.findall(result.stderr)}
    assert len(pids) == 3, result.stderr
    assert not [pid for pid in pids if running(pid)]


def test_bench_recovery_times_a_failover_with_standby_off_and_on(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCI_")}
    env["CCI_SESSION_TIMEOUT"] = TEST_SESSION_TIMEOUT

    result = subprocess.run(
        [sys.executable, "-m", "streams", "bench", "--recovery", "--users", "200", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout)
    off, on = report["runs"]
    assert (off["standby_replicas"], on["standby_replicas"]) == (0, 1)
    for run in (off, on):
        # Exact again after the kill, and every step of the fail-over seen, in order.
        assert run["exact"] and run["difference"] == []
        assert 0 < run["unhealthy_after_s"] < run["healthy_after_s"]
        assert run["exact_after_s"] > 0 and run["killed_owned_user_months"] > 0
    # Only with standby replicas does the survivor hold a copy, and take it over.
    assert off["survivor_standby_user_months"] == 0 and not off["took_over_standby"]
    assert on["survivor_standby_user_months"] == on["killed_owned_user_months"]
    assert on["took_over_standby"]
    # Two brokers and four workers announced their pids; none outlives the command.
    pids = {int(pid) for pid in PID.findall(result.stderr)}
    assert len(pids) == 6, result.stderr
    assert not [pid for pid in pids if running(pid)]
