"""The ingest child process: replaced when it dies, gone when the worker goes, exact throughout."""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

from streams.bench.measure import metric_values
from streams.dev.generate import generate
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, load_settings
from tests.integration.harness import WorkerProcess, produce, wait_for_figures, wait_until


def ingest_pid(worker: WorkerProcess) -> int | None:
    """The worker's (only) child process, if it has one."""
    children = [
        int(pid)
        for task in Path(f"/proc/{worker.pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    assert len(children) <= 1, children
    return children[0] if children else None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited


def consumed(worker: WorkerProcess) -> float:
    return (
        metric_values(worker.get("/metrics"), ["cci_events_consumed_total"])[
            "cci_events_consumed_total"
        ]
        or 0.0
    )


def test_a_killed_ingest_process_is_replaced_and_nothing_is_lost(pipeline) -> None:
    now = datetime.now(UTC)
    data = generate(users=400, months=3, seed=5, now=now, zone=load_settings({}).zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, load_settings({})).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    half = len(data.activity) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[:half])
    worker = pipeline.worker()
    first = ingest_pid(worker)
    assert first is not None and alive(first)
    feeder = threading.Thread(
        target=lambda: produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[half:])
    )
    feeder.start()
    wait_until(lambda: consumed(worker) > 0, 60, "the ingest process consumed nothing")
    os.kill(first, signal.SIGKILL)
    feeder.join()

    wait_until(lambda: ingest_pid(worker) not in (None, first), 30, "no new ingest process")
    worker.wait_healthy(60)
    assert "the ingest process exited (code -9)" in worker.log_tail(400)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected, workers=[worker])
    # Its counters carried on across the new process: every event counted at least once.
    events = len(data.activity) + len(data.tickets)
    wait_until(lambda: consumed(worker) >= events, 10, f"counted {consumed(worker)} of {events}")

    second = ingest_pid(worker)
    assert second is not None
    assert worker.stop() == 0
    assert not alive(second)
    log = worker.log_tail(400)
    assert f"ingest process {second}: stopped" in log
    assert log.count("the ingest process exited") == 1, "the stop was taken for a crash"


def test_the_ingest_process_exits_when_the_worker_dies(pipeline) -> None:
    worker = pipeline.worker()
    child = ingest_pid(worker)
    assert child is not None and alive(child)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone, not its process group
    # The kernel kills it with its parent (streams/children.py): at once, not after a timeout.
    wait_until(lambda: not alive(child), 5, f"ingest process {child} outlived its worker")
