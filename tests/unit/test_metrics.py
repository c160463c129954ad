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


def test_series_guard_admits_a_bounded_number_of_segments_per_month_and_dimension() -> None:
    from streams.metrics import SeriesGuard

    guard = SeriesGuard(2)
    assert guard.admit("2026-01", "region", "a") and guard.admit("2026-01", "region", "b")
    assert not guard.admit("2026-01", "region", "c")
    assert guard.admit("2026-01", "region", "a")  # a held segment keeps its series
    assert guard.admit("2026-01", "plan", "c") and guard.admit("2026-02", "region", "c")
    guard.forget("2026-01", "region", "a")
    assert guard.admit("2026-01", "region", "c")
