"""``cci soak``'s pure parts: the simulated months, their traffic and flatness (the worker's clock:
tests/unit/test_clock.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams import domain
from streams.bench.soak_report import (
    MIB,
    MonthSample,
    SoakReport,
    flatness,
    render_table,
    report_json,
    slope,
)
from streams.bench.soak_traffic import (
    clock_moment,
    clock_offset_seconds,
    expected_user_months,
    month_of_index,
    month_traffic,
    profile_records,
)
from streams.pipeline.validate import parse_activity, parse_ticket


def sample(index: int, rss_mib: float | None, month: str | None = None) -> MonthSample:
    return MonthSample(
        index=index,
        month=month or f"m{index}",
        events=10,
        expected_user_months=index,
        user_months=index,
        state_bytes=1000,
        rss_bytes=None if rss_mib is None else int(rss_mib * MIB),
        store_bytes=8 * MIB,
        seconds=1.0,
    )


# --- months and traffic --------------------------------------------------------------------------


def test_months_follow_each_other_across_a_year_end() -> None:
    december = domain.month_of(datetime(2026, 12, 5, tzinfo=UTC), ZoneInfo("UTC"))

    assert domain.month_label(month_of_index(december, 1)) == "2026-12"
    assert domain.month_label(month_of_index(december, 2)) == "2027-01"
    assert clock_moment(month_of_index(december, 2)) == datetime(2027, 1, 28, 12, tzinfo=UTC)


def test_the_clock_offset_is_what_real_time_lacks_to_reach_the_target() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)

    assert clock_offset_seconds(now + timedelta(days=2), now) == 2 * 86400
    assert clock_offset_seconds(now - timedelta(seconds=5), now) == -5


def test_held_user_months_grow_to_the_retention_window_then_stay() -> None:
    held = [expected_user_months(index, 3, 100) for index in range(0, 7)]

    assert held == [0, 100, 200, 300, 300, 300, 300]


def test_a_months_traffic_is_valid_input_inside_the_month_and_before_its_clock() -> None:
    month = domain.month_from_label("2027-02")
    traffic = month_traffic(month, users=50, tickets_per_user=0.4, seed=7)
    clock = clock_moment(month)

    activities = [parse_activity(value, 65536) for value in traffic.activity]
    tickets = [parse_ticket(value, 65536) for value in traffic.tickets]
    assert sorted(a.user_id for a in activities) == sorted({a.user_id for a in activities})
    assert len(activities) == 50 and len(tickets) == 20 and traffic.events == 70
    assert len({t.ticket_id for t in tickets}) == 20
    for moment in [a.occurred_at for a in activities] + [t.created_at for t in tickets]:
        assert moment.astimezone(UTC).strftime("%Y-%m") == "2027-02"
        # A day away from both month ends: the same month in any time zone.
        assert datetime(2027, 2, 2, tzinfo=UTC) <= moment < clock - timedelta(hours=12)
    # Deterministic per seed and month, different across months.
    assert month_traffic(month, 50, 0.4, 7) == traffic
    assert month_traffic(month + 1, 50, 0.4, 7).activity != traffic.activity


def test_profiles_cover_every_user_of_the_traffic_once() -> None:
    month = domain.month_from_label("2027-02")
    profiles = [orjson.loads(p) for p in profile_records(30, datetime(2025, 1, 1, tzinfo=UTC), 1)]
    users = {orjson.loads(a)["user_id"] for a in month_traffic(month, 30, 0, 1).activity}

    assert {p["user_id"] for p in profiles} == users
    assert {p["segments"]["plan"] for p in profiles} <= {"free", "paid", "vip"}


# --- flatness ------------------------------------------------------------------------------------


def test_flatness_compares_the_first_full_month_with_the_last() -> None:
    samples = [sample(0, 300), sample(1, 320), sample(2, 340), sample(3, 350), sample(4, 351)]
    samples += [sample(5, 352), sample(6, 353)]

    result = flatness(samples, retain_months=3)

    assert result is not None
    assert (result.from_month, result.to_month) == ("m3", "m6")
    assert result.growth_bytes == 3 * MIB
    assert result.growth_pct == pytest.approx(100 * 3 / 350)
    assert result.slope_bytes_per_month == pytest.approx(MIB)
    assert result.late_slope_bytes_per_month == pytest.approx(MIB)  # months 5 and 6
    assert result.flat


def test_the_late_slope_tells_warm_up_from_growth_that_goes_on() -> None:
    warming = [sample(2, 100), sample(3, 110), sample(4, 120), sample(5, 120), sample(6, 120)]

    result = flatness(warming, retain_months=2)

    assert result is not None and result.slope_bytes_per_month > 0
    assert result.late_slope_bytes_per_month == 0  # months 4 to 6


def test_growth_over_the_tolerance_is_not_flat() -> None:
    samples = [sample(2, 100), sample(3, 104), sample(4, 108)]

    result = flatness(samples, retain_months=2, tolerance_pct=5.0)

    assert result is not None and result.growth_pct == pytest.approx(8.0)
    assert not result.flat


def test_flatness_needs_two_full_months_with_a_known_rss() -> None:
    assert flatness([sample(1, 100), sample(2, 100)], retain_months=2) is None
    assert flatness([sample(2, 100), sample(3, None)], retain_months=2) is None


def test_slope_is_least_squares_and_zero_without_spread() -> None:
    assert slope([(1, 10), (2, 12), (3, 14)]) == pytest.approx(2)
    assert slope([(1, 10), (2, 14), (3, 12)]) == pytest.approx(1)
    assert slope([(1, 10)]) == 0
    assert slope([(2, 10), (2, 12)]) == 0


def test_the_report_has_a_row_per_month_and_the_verdict() -> None:
    report = SoakReport("2026-11-23T00:00:00+00:00", 4, 2, 300, 0.2, 4)
    report.samples = [sample(i, 390 + i / 10, f"2027-0{i}") for i in range(1, 5)]
    report.flatness = flatness(report.samples, 2)

    table = render_table(report)
    document = json.loads(report_json(report))

    assert "2027-04" in table and "flat" in table and "+0.2 MiB" in table
    assert [s["month"] for s in document["samples"]] == ["2027-01", "2027-02", "2027-03", "2027-04"]
    assert set(document["samples"][0]) >= {"user_months", "state_bytes", "rss_bytes", "month"}
    assert document["flatness"]["growth_bytes"] == report.flatness.growth_bytes  # type: ignore[union-attr]
    assert document["flat_tolerance_pct"] == 5.0
