"""Versions rise strictly per key; update values have the published cci-updates shape."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from streams import domain
from streams.pipeline.emit import Versions, update_key, update_value

NOW = datetime(2026, 3, 14, 9, 30, 0, tzinfo=UTC)
NOW_MICROS = 1_773_480_600_000_000
MARCH = domain.month_from_label("2026-03")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def test_the_first_version_is_the_emission_time_in_microseconds() -> None:
    assert NOW.timestamp() * 1_000_000 == NOW_MICROS  # the constant itself is right

    assert Versions().next("k", NOW) == NOW_MICROS


def test_versions_rise_strictly_when_the_clock_stands_still() -> None:
    versions = Versions()

    issued = [versions.next("k", NOW) for _ in range(5)]

    assert issued == [NOW_MICROS + i for i in range(5)]


def test_versions_rise_strictly_when_the_clock_goes_back() -> None:
    versions = Versions()
    first = versions.next("k", NOW)

    second = versions.next("k", NOW - timedelta(hours=1))
    third = versions.next("k", NOW - timedelta(days=1))

    assert first < second < third


def test_versions_follow_the_clock_when_it_moves_on() -> None:
    versions = Versions()
    versions.next("k", NOW)

    assert versions.next("k", NOW + timedelta(seconds=1)) == NOW_MICROS + 1_000_000


def test_keys_are_versioned_independently() -> None:
    versions = Versions()
    for _ in range(3):
        versions.next("a", NOW)

    assert versions.next("b", NOW) == NOW_MICROS
    assert versions.next("a", NOW) == NOW_MICROS + 3


def test_without_a_time_the_wall_clock_is_used() -> None:
    before = int(datetime.now(UTC).timestamp() * 1_000_000)

    version = Versions().next("k")

    after = int(datetime.now(UTC).timestamp() * 1_000_000)
    assert before <= version <= after


def test_update_key_names_month_dimension_and_segment() -> None:
    assert update_key(MARCH, "plan", "free") == "2026-03|plan|free"


def test_update_value_shape() -> None:
    moment = datetime(2026, 3, 14, 9, 30, 0, 123_456, tzinfo=UTC)

    value = update_value(MARCH, "plan", "free", 3, 8, 42, moment)

    assert value == {
        "month": "2026-03",
        "dimension": "plan",
        "segment": "free",
        "tickets": 3,
        "active_users": 8,
        "cci": 0.375,
        "contact_rate_pct": 37.5,
        "band": "above",  # of the default target range, 20–30%
        "version": 42,
        "emitted_at": "2026-03-14T09:30:00.123Z",
    }


@pytest.mark.parametrize(("tickets", "active_users"), [(1, 3), (7, 7), (250, 1_000), (0, 5)])
def test_contact_rate_is_a_hundred_times_the_cci(tickets: int, active_users: int) -> None:
    value = update_value(MARCH, "all", "all", tickets, active_users, 1, NOW)

    assert value["cci"] == pytest.approx(tickets / active_users)
    assert value["contact_rate_pct"] == pytest.approx(100 * value["cci"])


@pytest.mark.parametrize("tickets", [0, 4])
def test_without_active_users_cci_is_undefined(tickets: int) -> None:
    value = update_value(MARCH, "plan", "vip", tickets, 0, 1, NOW)

    assert value["cci"] is None
    assert value["contact_rate_pct"] is None
    assert value["band"] is None
    assert value["tickets"] == tickets


def test_the_band_follows_the_target_range_it_is_given() -> None:
    narrow = domain.parse_target_range("5,10")

    def band(tickets: int, users: int) -> str | None:
        return update_value(MARCH, "all", "all", tickets, users, 1, NOW, target=narrow)["band"]

    assert [band(4, 100), band(5, 100), band(10, 100), band(11, 100)] == [
        "below", "within", "within", "above"
    ]  # fmt: skip


def test_emitted_at_is_rfc3339_utc_with_a_z() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

    emitted_at = update_value(MARCH, "all", "all", 1, 1, 1, moment)["emitted_at"]

    assert RFC3339_UTC.match(emitted_at), emitted_at
    assert datetime.fromisoformat(emitted_at) == moment.replace(microsecond=999_000)


def test_forgetting_drops_only_the_expired_keys_and_names_them() -> None:
    versions = Versions()
    for key in ("2026-01|all|all", "2026-02|plan|free", "2026-03|all|all"):
        versions.next(key, NOW)

    gone = versions.forget(lambda key: key < "2026-03")

    assert sorted(gone) == ["2026-01|all|all", "2026-02|plan|free"]
    assert list(versions.last) == ["2026-03|all|all"]
    assert versions.forget(lambda key: key < "2026-03") == []
