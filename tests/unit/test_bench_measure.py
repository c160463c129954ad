"""The bench's measurements: percentiles, latency matching, settling, /proc and /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.bench.measure import (
    FigureHistory,
    describe_difference,
    memory_of,
    metric_values,
    parse_proc_status,
    per_second,
    percentile,
    ratio,
    visibility_latencies,
)

# --- percentiles ---------------------------------------------------------------------------------


def test_percentile_is_nearest_rank_and_always_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order must not matter
    values.reverse()

    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([10.0, 20.0], 50) == 10  # no interpolation to 15
    assert percentile([10.0, 20.0], 51) == 20


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 1) == 7
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], q)


# --- latency matching ----------------------------------------------------------------------------


def test_event_k_is_visible_when_the_count_first_reaches_base_plus_k() -> None:
    produced = [1000, 1001, 1002, 1010]
    # Base 50: the counter reaches 52 at t=1300 (events 1 and 2), 54 at t=1800 (events 3 and 4).
    published = [(1200, 50), (1300, 52), (1500, 52), (1800, 54)]

    assert visibility_latencies(produced, published, base=50) == [300, 299, 798, 790]


def test_a_count_that_jumps_past_several_events_makes_them_visible_together() -> None:
    assert visibility_latencies([0, 5, 9], [(100, 3)], base=0) == [100, 95, 91]


def test_events_no_publication_reached_have_no_latency() -> None:
    assert visibility_latencies([0, 1, 2], [(50, 11)], base=10) == [50, None, None]
    assert visibility_latencies([0, 1], [], base=0) == [None, None]


def test_a_publication_before_the_phase_does_not_count() -> None:
    # The first record still carries the count from before the phase (republished).
    assert visibility_latencies([100], [(90, 7), (400, 8)], base=7) == [300]


# --- settling ------------------------------------------------------------------------------------


def test_settled_at_is_the_last_record_that_changed_a_figure() -> None:
    history = FigureHistory()
    history.apply(("2026-11", "all", "all"), (1, 1), 100)
    history.apply(("2026-11", "plan", "free"), (1, 1), 120)
    history.apply(("2026-11", "all", "all"), (2, 1), 150)
    history.apply(("2026-11", "all", "all"), (2, 1), 400)  # a republish changes nothing

    assert history.settled_at() == 150
    assert history.figures() == {
        ("2026-11", "all", "all"): (2, 1),
        ("2026-11", "plan", "free"): (1, 1),
    }


def test_a_segment_published_with_zeros_equals_an_absent_one() -> None:
    history = FigureHistory()
    history.apply(("2026-11", "region", "eu"), (1, 1), 100)
    history.apply(("2026-11", "region", "eu"), (0, 0), 200)

    assert history.figures() == {}
    assert history.settled_at() == 200
    assert FigureHistory().settled_at() is None


def test_difference_names_each_differing_figure_and_caps_the_list() -> None:
    expected = {("2026-11", "all", "all"): (3, 2), ("2026-11", "plan", "vip"): (1, 1)}
    actual = {("2026-11", "all", "all"): (3, 1)}

    assert describe_difference(expected, actual) == [
        "2026-11|all|all: expected (3, 2), got (3, 1)",
        "2026-11|plan|vip: expected (1, 1), got (0, 0)",
    ]
    many = {("2026-11", "plan", str(n)): (n, n) for n in range(1, 15)}
    lines = describe_difference(many, {}, limit=10)
    assert len(lines) == 11 and lines[-1] == "… 4 more"


def test_rates_and_ratios_without_a_measurement_are_none() -> None:
    assert per_second(1000, 4.0) == 250
    assert per_second(1000, None) is None
    assert per_second(1000, 0.0) is None
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, None) is None


# --- processes -----------------------------------------------------------------------------------

PROC_STATUS = """Name:\tpython
VmPeak:\t  900000 kB
VmHWM:\t  204800 kB
VmRSS:\t  102400 kB
Threads:\t5
"""


def test_proc_status_gives_rss_and_its_peak() -> None:
    memory = parse_proc_status(PROC_STATUS)

    assert memory.rss_bytes == 100 * 2**20
    assert memory.peak_rss_bytes == 200 * 2**20
    assert parse_proc_status("Name:\tx\n").rss_bytes is None


def test_memory_of_a_process_with_its_children_adds_theirs() -> None:
    # A parent that starts a child holding ~64 MiB, then waits for it.
    child = "b = bytearray(64 << 20); import time; time.sleep(30)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    process = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alone, whole = memory_of(process.pid), memory_of(process.pid, with_children=True)
            assert alone.rss_bytes is not None and whole.rss_bytes is not None
            if whole.rss_bytes - alone.rss_bytes > 64 << 20:
                break
            time.sleep(0.1)
        assert whole.rss_bytes - alone.rss_bytes > 64 << 20, (alone, whole)
        assert whole.peak_rss_bytes is not None and alone.peak_rss_bytes is not None
        assert whole.peak_rss_bytes - alone.peak_rss_bytes > 64 << 20
    finally:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        process.kill()
        process.wait()
    assert memory_of(process.pid, with_children=True) == memory_of(process.pid)


METRICS = """# HELP cci_events_consumed_total Input records consumed
# TYPE cci_events_consumed_total counter
cci_events_consumed_total{topic="user-activity"} 120.0
cci_events_consumed_total{topic="ticket-created"} 30.0
# HELP cci_events_consumed_created Input records consumed
# TYPE cci_events_consumed_created gauge
cci_events_consumed_created{topic="user-activity"} 1.7e9
# HELP cci_user_months Distinct active user-months held in dedup state
# TYPE cci_user_months gauge
cci_user_months 42.0
"""


def test_metrics_are_summed_over_labels_and_absent_ones_are_none() -> None:
    values = metric_values(
        METRICS, ["cci_events_consumed_total", "cci_user_months", "cci_dedup_state_bytes"]
    )

    assert values == {
        "cci_events_consumed_total": 150.0,
        "cci_user_months": 42.0,
        "cci_dedup_state_bytes": None,
    }
    assert metric_values("", ["cci_user_months"]) == {"cci_user_months": None}
