"""Several workers share the group while partitions move between them, and the latest
cci-updates per key still equal a batch recount of the raw events, exactly.

Each also runs in a loop: tests/integration/loop_multiworker.sh (pass counts in
docs/embedded-broker.md).
"""

from __future__ import annotations

from streams.bench.measure import metric_values
from streams.dev.generate import Dataset
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS
from tests.integration.harness import (
    Figures,
    WorkerProcess,
    count_half_the_tickets,
    latest_updates,
    produce,
    produce_events,
    three_workers_on_half_the_activity,
    wait_for_figures,
    wait_until,
)


def _two_workers_at_half_the_tickets(
    pipeline, data: Dataset
) -> tuple[WorkerProcess, WorkerProcess, int, Figures]:
    """Two workers in the group, every activity and half the tickets counted by both."""
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    first = pipeline.worker("first")
    second = pipeline.worker("second")
    half, recount_half = count_half_the_tickets(pipeline, data, [first, second])
    return first, second, half, recount_half


def test_two_workers_share_the_group_and_survive_a_rebalance(pipeline, dataset) -> None:
    data, expected = dataset
    first, second, half, _ = _two_workers_at_half_the_tickets(pipeline, data)
    # Both workers took part: each owns some partitions.
    assert "partitions" in first.log_tail(400) and second.health() == 200
    # The second worker dies; its partitions move to the first, which must carry on exactly.
    second.kill()
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[half:])
    produce_events(pipeline.bootstrap, data)  # and a full resend for good measure
    wait_for_figures(pipeline.bootstrap, expected, timeout=120, workers=[first])
    assert first.health() == 200


def test_three_workers_one_killed_and_restarted_one_leaving(pipeline, dataset) -> None:
    data, expected = dataset
    (first, second, third), half = three_workers_on_half_the_activity(pipeline, data)
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
    first, second, half, recount_half = _two_workers_at_half_the_tickets(pipeline, data)
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
    produce_events(pipeline.bootstrap, data)  # and a full resend for good measure
    wait_for_figures(pipeline.bootstrap, expected, timeout=120, workers=[first])
    assert "taking over its standby state" in first.log_path.read_text()
    everyone = sum(
        users for (_, dimension, _), (_, users) in expected.items() if dimension == "all"
    )
    wait_until(lambda: owned(first) == everyone, 30, f"owned {owned(first)} of {everyone}")
    assert first.health() == 200
