"""Metrics counted in the ingest process and served by the worker: snapshots and their deltas."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams import metrics


def fresh() -> tuple[Counter | Gauge, ...]:
    registry = CollectorRegistry()
    return (
        Counter("consumed_total", "", ["topic"], registry=registry),
        Counter("inactive_total", "", registry=registry),
        Gauge("lag", "", ["topic"], registry=registry),
    )


def value(metric: Counter | Gauge, *labels: str) -> float:
    child = metric.labels(*labels) if labels else metric
    return float(child._value.get())


def test_a_snapshot_holds_every_labelled_value_and_no_timestamps() -> None:
    consumed, inactive, lag = fresh()
    consumed.labels("a").inc(3)
    consumed.labels("b").inc()
    inactive.inc(2)
    lag.labels("a").set(7)
    assert metrics.snapshot((consumed, inactive, lag)) == {
        (0, ("a",)): 3.0,
        (0, ("b",)): 1.0,
        (1, ()): 2.0,
        (2, ("a",)): 7.0,
    }


def test_counters_move_by_the_difference_and_carry_on_across_a_new_process() -> None:
    served = fresh()
    child = fresh()
    child[0].labels("a").inc(5)
    child[1].inc(1)
    child[2].labels("a").set(9)
    first = metrics.snapshot(child)
    metrics.apply_snapshot(served, {}, first)
    child[0].labels("a").inc(2)
    child[2].labels("a").set(4)
    second = metrics.snapshot(child)
    metrics.apply_snapshot(served, first, second)
    assert value(served[0], "a") == 7
    assert value(served[1]) == 1
    assert value(served[2], "a") == 4  # a gauge takes the value

    # The process died and a new one counts from zero: nothing is lost or taken back.
    replacement = fresh()
    replacement[0].labels("a").inc(3)
    metrics.apply_snapshot(served, {}, metrics.snapshot(replacement))
    assert value(served[0], "a") == 10
    assert value(served[1]) == 1


def test_gauges_of_several_processes_combine_and_skipped_counters_stay() -> None:
    consumed, inactive, lag = fresh()
    first_seen = Gauge("first_seen", "", registry=CollectorRegistry())
    served = (consumed, inactive, lag, first_seen)
    one, two = fresh(), fresh()
    one[0].labels("a").inc(2)
    one[1].inc(5)
    one[2].labels("a").set(3)
    two[1].inc(5)  # both read the same input: only the first one's count is served
    two[2].labels("a").set(4)
    two[2].labels("b").set(1)
    one_seen, two_seen = (Gauge("first_seen", "", registry=CollectorRegistry()) for _ in "12")
    one_seen.set(200.0)
    two_seen.set(100.0)
    snapshots = [metrics.snapshot((*one, one_seen)), metrics.snapshot((*two, two_seen))]
    metrics.apply_snapshot(served, {}, snapshots[0], skip=(lag, first_seen))
    metrics.apply_snapshot(served, {}, snapshots[1], skip=(inactive, lag, first_seen))
    assert value(served[2], "a") == 0  # gauges are not taken from one process
    metrics.combine_gauges(served, snapshots, earliest=(first_seen,))
    assert value(consumed, "a") == 2 and value(inactive) == 5
    assert value(lag, "a") == 7 and value(lag, "b") == 1
    assert value(first_seen) == 100.0
    # A process that has not seen an event yet (0) does not make the earliest time 0.
    two_seen.set(0)
    metrics.combine_gauges(
        served, [snapshots[0], metrics.snapshot((*two, two_seen))], earliest=(first_seen,)
    )
    assert value(first_seen) == 200.0


def test_series_guard_admits_a_bounded_number_of_segments_per_month_and_dimension() -> None:
    from streams.metrics import SeriesGuard

    guard = SeriesGuard(2)
    assert guard.admit("2026-01", "region", "a") and guard.admit("2026-01", "region", "b")
    assert not guard.admit("2026-01", "region", "c")
    assert guard.admit("2026-01", "region", "a")  # a held segment keeps its series
    assert guard.admit("2026-01", "plan", "c") and guard.admit("2026-02", "region", "c")
    guard.forget("2026-01", "region", "a")
    assert guard.admit("2026-01", "region", "c")
