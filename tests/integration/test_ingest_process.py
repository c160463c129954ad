"""The ingest child process: replaced when it dies, gone when the worker goes, exact throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.bench.measure import metric_values
from streams.bench.outputs import OutputTail, decode_update
from streams.dev.generate import generate
from streams.pipeline.recount import recount
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    load_settings,
)
from streams.topics import ingest_group
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


@contextmanager
def ingest_commits(bootstrap: str) -> Iterator[Callable[[], int]]:
    """A function returning how many activity records ingest has committed (its group's committed
    offsets, summed: the tests' records start at offset 0), quickly enough to call in a loop."""
    settings = load_settings({})
    tps = [TopicPartition(TOPIC_ACTIVITY, p) for p in range(settings.partitions)]

    async def started() -> AIOKafkaConsumer:
        # Asks for the group's offsets without joining it. Made in the loop: it needs a running one.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=ingest_group(settings.app_id)
        )
        await consumer.start()
        return consumer

    async def fetch(consumer: AIOKafkaConsumer) -> int:
        offsets = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        return sum(offset or 0 for offset in offsets)

    loop = asyncio.new_event_loop()
    consumer = loop.run_until_complete(started())
    try:
        yield lambda: loop.run_until_complete(fetch(consumer))
    finally:
        loop.run_until_complete(consumer.stop())
        loop.close()


def test_ingest_counts_reach_the_worker_before_their_offsets_are_committed(pipeline) -> None:
    """Frozen right after a commit, the ingest process has already told the worker the counts of
    what it committed: killed there, it loses none (its successor does not read them again)."""
    now = datetime.now(UTC)
    data = generate(users=400, months=3, seed=7, now=now, zone=load_settings({}).zone)
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    child = ingest_pid(worker)
    assert child is not None
    feeder = threading.Thread(
        target=lambda: produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    )
    feeder.start()
    with ingest_commits(pipeline.bootstrap) as committed:
        seen = committed()
        for attempt in range(3):
            deadline = time.monotonic() + 60
            while (latest := committed()) == seen:
                assert time.monotonic() < deadline, "ingest committed nothing new"
            os.kill(child, signal.SIGSTOP)  # right after a commit: no report can follow it
            try:
                seen = max(latest, committed())  # one more may have been on its way
                wait_until(
                    lambda seen=seen: consumed(worker) >= seen,
                    5,
                    f"committed {seen}, counted {consumed(worker)} (freeze {attempt + 1})",
                )
            finally:
                os.kill(child, signal.SIGCONT)
    os.kill(child, signal.SIGKILL)
    feeder.join()
    wait_until(lambda: ingest_pid(worker) not in (None, child), 30, "no new ingest process")
    events = len(data.activity)
    wait_until(lambda: consumed(worker) >= events, 60, f"counted {consumed(worker)} of {events}")


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


def first_event_gauge(worker: WorkerProcess) -> float | None:
    gauge = "cci_first_event_consumed_timestamp_seconds"
    return metric_values(worker.get("/metrics"), [gauge])[gauge]


async def first_update_ms(bootstrap: str) -> int | None:
    async with OutputTail(bootstrap, TOPIC_UPDATES, decode_update) as tail:
        while await tail.read():
            pass
        return tail.first_record_ms


def test_the_first_event_gauge_is_the_ingest_clock_when_the_first_input_came(pipeline) -> None:
    """``cci bench`` times the first output from it: on the clock that stamps the worker's output
    records, so the first cci-updates record is never before it."""
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=100, months=2, seed=11, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    assert first_event_gauge(worker) == 0  # profiles are no input events

    before = time.time()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected, workers=[worker])

    first = first_event_gauge(worker)
    assert first is not None and before <= first <= time.time()
    first_output_ms = asyncio.run(first_update_ms(pipeline.bootstrap))
    assert first_output_ms is not None and first * 1000 <= first_output_ms
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)  # a later batch changes nothing
    events = 2 * len(data.tickets) + len(data.activity)
    wait_until(lambda: consumed(worker) >= events, 30, f"counted {consumed(worker)} of {events}")
    assert first_event_gauge(worker) == first


def ingest_pids(worker: WorkerProcess) -> list[int]:
    return [
        int(pid)
        for task in Path(f"/proc/{worker.pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]


def test_two_ingest_processes_share_the_input_and_count_everything_once(pipeline) -> None:
    """CCI_INGEST_PROCESSES=2 (the default): the input partitions are split between two children
    (one consumer group), the figures are exact, and the worker serves every count once: the
    events of both, the invalid profiles (which both read) of one. One killed is replaced."""
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=400, months=3, seed=9, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    invalid = [b'{"user_id": "broken"}', b"not json"]
    produce(pipeline.bootstrap, TOPIC_PROFILES, [*data.profiles, *invalid])
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[: len(data.activity) // 2])
    worker = pipeline.worker(CCI_INGEST_PROCESSES="2")
    wait_until(lambda: len(ingest_pids(worker)) == 2, 30, "two ingest processes")
    first, second = ingest_pids(worker)
    wait_until(lambda: consumed(worker) > 0, 60, "nothing consumed")
    os.kill(second, signal.SIGKILL)
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[len(data.activity) // 2 :])
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_until(lambda: second not in ingest_pids(worker), 30, "the killed one not replaced")
    wait_until(lambda: len(ingest_pids(worker)) == 2, 30, "two ingest processes again")
    worker.wait_healthy(60)
    assert "the ingest process 2 of 2 exited (code -9)" in worker.log_tail(400)
    wait_for_figures(pipeline.bootstrap, expected, workers=[worker])

    names = [
        "cci_events_consumed_total",
        "cci_invalid_profiles_total",
        "cci_consumer_lag_records",
        "cci_first_event_consumed_timestamp_seconds",
    ]
    events = len(data.activity) + len(data.tickets)
    wait_until(
        lambda: metric_values(worker.get("/metrics"), names)["cci_consumer_lag_records"] == 0,
        30,
        "lag left",
    )
    values = metric_values(worker.get("/metrics"), names)
    # At least once: the killed process's last batch may have been read again by its successor.
    assert events <= (values["cci_events_consumed_total"] or 0) < 2 * events
    assert values["cci_invalid_profiles_total"] == len(invalid)
    started = values["cci_first_event_consumed_timestamp_seconds"]
    assert started is not None and now.timestamp() <= started <= time.time()
    assert first in ingest_pids(worker)
