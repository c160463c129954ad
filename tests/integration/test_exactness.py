"""The latest cci-updates per key equal a batch recount of the raw events, exactly.

Three ways at-least-once delivery tries to break that: resent events, a worker killed with
SIGKILL mid-stream, and two workers sharing the group while partitions move between them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from streams.bench.measure import metric_values
from streams.dev.generate import Dataset, generate
from streams.pipeline.recount import recount
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    load_settings,
)
from tests.integration.harness import (
    Figures,
    WorkerProcess,
    figures_of,
    latest_updates,
    produce,
    read_topic,
    samples_by_label,
    wait_consumed,
    wait_for_figures,
    wait_until,
)


@pytest.fixture(scope="module")
def dataset() -> tuple[Dataset, Figures]:
    now = datetime.now(UTC)
    data = generate(users=400, months=3, seed=11, now=now, zone=load_settings({}).zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, load_settings({})).figures
    assert len(expected) > 50 and any(t for t, _ in expected.values())
    return data, expected


def _produce_events(bootstrap: str, data: Dataset, part: slice = slice(None)) -> None:
    produce(bootstrap, TOPIC_ACTIVITY, data.activity[part])
    produce(bootstrap, TOPIC_TICKETS, data.tickets[part])


def test_resent_events_count_once(pipeline, dataset) -> None:
    data, expected = dataset
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    started = time.monotonic()
    _produce_events(pipeline.bootstrap, data)
    wait_for_figures(pipeline.bootstrap, expected)
    # Bursts are coalesced: the busiest key gets about one record per emit interval (0.3 s in
    # the tests), not one per event.
    elapsed = time.monotonic() - started
    per_key = Counter(key for key, _ in read_topic(pipeline.bootstrap, TOPIC_UPDATES))
    busiest = max(per_key.values())
    events = len(data.activity) + len(data.tickets)
    assert busiest <= elapsed / 0.3 + 3 and busiest < events / 20, (busiest, events, elapsed)
    page = worker.get("/metrics")
    repeats_before = samples_by_label(page, "cci_repeat_facts", "kind")
    active_facts = (
        len(data.activity)
        - metric_values(page, ["cci_inactive_activities"])["cci_inactive_activities"]
    )
    # A producer that resends everything (and then some, out of order) changes nothing.
    _produce_events(pipeline.bootstrap, data, slice(None, None, -1))
    _produce_events(pipeline.bootstrap, data)
    # The figures are already right, so comparing them proves something only once the resends
    # were read (ingest) and reached the aggregate (every resent fact counted as a repeat).
    wait_consumed(
        worker, {TOPIC_ACTIVITY: 3 * len(data.activity), TOPIC_TICKETS: 3 * len(data.tickets)}
    )
    resent = {"active": 2 * active_facts, "ticket": 2 * len(data.tickets)}

    def repeats_added() -> dict[str, float]:
        now = samples_by_label(worker.get("/metrics"), "cci_repeat_facts", "kind")
        return {kind: now.get(kind, 0) - repeats_before.get(kind, 0) for kind in resent}

    deadline = time.monotonic() + 60
    while (added := repeats_added()) != resent and time.monotonic() < deadline:
        time.sleep(0.5)
    assert added == resent, f"repeat facts after the resends: {added}, expected {resent}"
    assert figures_of(latest_updates(pipeline.bootstrap)) == expected


# It failed about 1 run in 6 until the restarted worker sought every stream partition without a
# commit to its beginning (streams/worker/positions.py; docs/embedded-broker.md): 35 of 35 since.
def test_sigkill_mid_stream_then_restart(pipeline, dataset) -> None:
    data, expected = dataset
    # "auto": the switch forgotten (issue 13, point 11) must not matter on the embedded broker.
    # It resolves to the same workarounds as "true" (asserted from the log below), which every
    # other pipeline test sets, so the kill is not run a second time with "true".
    pipeline.env["CCI_EMBEDDED_BROKER"] = "auto"
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    half = len(data.activity) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[:half])
    first = pipeline.worker("first")
    # Kill while the rest of the activity is still arriving: state, changelog and offsets are
    # mid-flight. The tickets come only after the kill, so what was published then is
    # certainly incomplete, however fast the worker is.
    feeder = threading.Thread(
        target=lambda: produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[half:])
    )
    feeder.start()
    wait_until(lambda: bool(latest_updates(pipeline.bootstrap)), 60, "nothing was published")
    first.kill()
    at_kill = figures_of(latest_updates(pipeline.bootstrap))
    feeder.join()
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    second = pipeline.worker("second")
    wait_for_figures(pipeline.bootstrap, expected, workers=[second])
    assert at_kill and at_kill != expected, "the kill came too late to test recovery"
    assert "embedded_broker=True" in second.log_path.read_text()


# Not exact in every run (9 of 10 in the loop on 2026-12-02: a partition that moved to the
# survivor was read from its end instead of its committed offset; docs/embedded-broker.md): run by
# tests/integration/loop_multiworker.sh (TESTS=two_workers), not by make test, until it is exact.
@pytest.mark.loop
def test_two_workers_share_the_group_and_survive_a_rebalance(pipeline, dataset) -> None:
    data, expected = dataset
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    first = pipeline.worker("first")
    second = pipeline.worker("second")
    half = len(data.tickets) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[:half])
    recount_half = recount(
        data.activity, data.tickets[:half], data.profiles, datetime.now(UTC), load_settings({})
    ).figures
    wait_for_figures(pipeline.bootstrap, recount_half)
    # Both workers took part: each owns some partitions.
    assert "partitions" in first.log_tail(400) and second.health() == 200
    # The second worker dies; its partitions move to the first, which must carry on exactly.
    second.kill()
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[half:])
    _produce_events(pipeline.bootstrap, data)  # and a full resend for good measure
    wait_for_figures(pipeline.bootstrap, expected, timeout=120, workers=[first])
    assert first.health() == 200


# About a minute a run: run by tests/integration/loop_multiworker.sh (TESTS=three_workers), not by
# make test (docs/embedded-broker.md has its pass counts).
@pytest.mark.loop
def test_three_workers_one_killed_and_restarted_one_leaving(pipeline, dataset) -> None:
    data, expected = dataset
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    first = pipeline.worker("first")
    second = pipeline.worker("second")
    third = pipeline.worker("third")
    half = len(data.activity) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[:half])
    wait_until(lambda: bool(latest_updates(pipeline.bootstrap)), 60, "nothing was published")
    # SIGKILL mid-stream, and back with the same name (and data directory).
    second.kill()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[half:])
    second = pipeline.worker("second")
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[: len(data.tickets) // 2])
    # A clean leave: SIGTERM, a goodbye to the group, exit status 0.
    assert third.stop() == 0
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[len(data.tickets) // 2 :])
    wait_for_figures(pipeline.bootstrap, expected, timeout=120, workers=[first, second])
    assert first.health() == 200 and second.health() == 200
    # Its output keeps leaving: the producer watch says so (issue 18).
    assert "cci_producer_oldest_pending_seconds 0.0" in first.get("/metrics")


def test_a_standby_takes_over_a_killed_workers_partitions_exactly(pipeline, dataset) -> None:
    data, expected = dataset
    pipeline.env["CCI_STANDBY_REPLICAS"] = "1"
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    first = pipeline.worker("first")
    second = pipeline.worker("second")
    half = len(data.tickets) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[:half])
    recount_half = recount(
        data.activity, data.tickets[:half], data.profiles, datetime.now(UTC), load_settings({})
    ).figures
    wait_for_figures(pipeline.bootstrap, recount_half, workers=[first, second])
    # Each worker holds a copy of the other's partitions, but publishes (and counts) only its
    # own: the owned user-months of both add up to the true total once, not twice.
    total = sum(
        users for (_, dimension, _), (_, users) in recount_half.items() if dimension == "all"
    )

    def owned(worker: WorkerProcess) -> float:
        return metric_values(worker.get("/metrics"), ["cci_user_months"])["cci_user_months"] or 0.0

    wait_until(
        lambda: owned(first) + owned(second) == total,
        30,
        f"owned {owned(first)} + {owned(second)}, total {total}",
    )
    assert owned(first) and owned(second), "both workers own partitions"
    # The second worker dies; the first takes its partitions over from its standby copies.
    second.kill()
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[half:])
    _produce_events(pipeline.bootstrap, data)  # and a full resend for good measure
    wait_for_figures(pipeline.bootstrap, expected, timeout=120, workers=[first])
    assert "taking over its standby state" in first.log_path.read_text()
    everyone = sum(
        users for (_, dimension, _), (_, users) in expected.items() if dimension == "all"
    )
    wait_until(lambda: owned(first) == everyone, 30, f"owned {owned(first)} of {everyone}")
    assert first.health() == 200
