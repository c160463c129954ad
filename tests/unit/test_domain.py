"""The pure product rules: calendar months, retention, tenure, segments, CCI arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from streams import domain

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def label_of(text: str, zone: ZoneInfo) -> str:
    return domain.month_label(domain.month_of(at(text), zone))


# --- calendar months -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "zone", "expected"),
    [
        # Berlin is on summer time (UTC+2) from 2026-03-29: 22:30Z is already 00:30 on April 1.
        ("2026-03-31T22:30:00+00:00", BERLIN, "2026-04"),
        ("2026-03-31T21:59:59+00:00", BERLIN, "2026-03"),
        # Back on winter time (UTC+1) from 2026-10-25: 22:59Z is still October, 23:00Z November.
        ("2026-10-31T22:59:59+00:00", BERLIN, "2026-10"),
        ("2026-10-31T23:00:00+00:00", BERLIN, "2026-11"),
        # New York on EDT (UTC-4) until 2026-11-01 06:00Z: 03:30Z on Nov 1 is still October.
        ("2026-11-01T03:30:00+00:00", NEW_YORK, "2026-10"),
        ("2026-11-01T04:00:00+00:00", NEW_YORK, "2026-11"),
        # EST (UTC-5) in winter: March starts at 05:00Z.
        ("2026-03-01T04:59:59+00:00", NEW_YORK, "2026-02"),
        ("2026-03-01T05:00:00+00:00", NEW_YORK, "2026-03"),
        # New Year crosses the year in the index too.
        ("2025-12-31T23:30:00+00:00", BERLIN, "2026-01"),
        ("2026-01-01T03:00:00+00:00", NEW_YORK, "2025-12"),
        # The offset written in the timestamp does not matter, only the instant.
        ("2026-04-01T00:30:00+02:00", ZoneInfo("UTC"), "2026-03"),
    ],
)
def test_month_of_is_the_local_calendar_month(moment: str, zone: ZoneInfo, expected: str) -> None:
    assert label_of(moment, zone) == expected
    micros = domain.epoch_micros(at(moment))
    assert domain.month_label(domain.month_of_micros(micros, zone)) == expected


@pytest.mark.parametrize(
    "zone",
    # The extremes of today's offsets, half and quarter hours, a zone on the date line, and
    # Monrovia's -0:44:30 of 1970-1972.
    [
        "UTC",
        "Pacific/Kiritimati",
        "Pacific/Niue",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Pacific/Apia",
        "Africa/Monrovia",
        "America/Santiago",
        "Europe/Berlin",
    ],
)
def test_month_of_micros_agrees_with_month_of_around_every_month_boundary(zone: str) -> None:
    tz = ZoneInfo(zone)
    for year in (1970, 1971, 2011, 2026):
        for month in range(1, 13):
            boundary = datetime(year, month, 1, tzinfo=UTC)
            # Every 15 minutes from two days before each UTC month start to two days after.
            for quarter in range(-192, 193):
                moment = boundary + timedelta(minutes=15 * quarter, seconds=quarter % 7)
                micros = domain.epoch_micros(moment)
                if micros >= 0:
                    assert domain.month_of_micros(micros, tz) == domain.month_of(moment, tz), moment


def _first_micros_of(month: int, tz: ZoneInfo) -> int:
    """The first µs whose month in ``tz`` is ``month`` (bisection with ``month_of``)."""
    start = domain.month_start(month)
    low = domain.epoch_micros(datetime.combine(start, datetime.min.time(), UTC)) - 86_400_000_000
    high = low + 2 * 86_400_000_000
    while high - low > 1:
        middle = (low + high) // 2
        moment = domain.EPOCH + timedelta(microseconds=middle)
        if domain.month_of(moment, tz) >= month:
            high = middle
        else:
            low = middle
    return high


@pytest.mark.parametrize(
    ("zone", "years"),
    [
        ("UTC", (1970, 2026, 9998)),
        ("Asia/Kathmandu", (2026,)),  # +05:45
        ("Pacific/Kiritimati", (2026, 9998)),  # +14: the new month starts the UTC day before
        ("Pacific/Niue", (2026,)),  # -11
        ("Africa/Monrovia", (1970, 1971)),  # -00:44:30: a month starts at 00:44:30 UTC
        # Offsets that change on the first of a month at local midnight (Asunción 1976-1983),
        # and on 2026-11-01 (Havana): the day is converted instant by instant.
        ("America/Asuncion", (1976, 1977, 1983)),
        ("America/Havana", (2026,)),
        ("Europe/Berlin", (2026,)),
    ],
)
def test_month_of_micros_changes_month_at_the_exact_microsecond(
    zone: str, years: tuple[int, ...]
) -> None:
    tz = ZoneInfo(zone)
    for year in years:
        for number in range(1, 13):
            month = year * 12 + number - 1
            first = _first_micros_of(month, tz)
            for micros in (first - 1, first, first + 1):
                moment = domain.EPOCH + timedelta(microseconds=micros)
                assert domain.month_of_micros(micros, tz) == domain.month_of(moment, tz), moment
            assert domain.month_of_micros(first - 1, tz) == month - 1
            assert domain.month_of_micros(first, tz) == month


def test_month_of_micros_at_the_ends_of_the_accepted_years() -> None:
    # The last µs of year 9998 in UTC and in zones ahead of and behind it; the first of 1970.
    last = domain.epoch_micros(datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert domain.month_label(domain.month_of_micros(last, ZoneInfo("UTC"))) == "9998-12"
    behind = last + 11 * 3_600_000_000  # 9998-12-31T23:59:59.999999-11:00
    assert domain.month_label(domain.month_of_micros(behind, ZoneInfo("Pacific/Niue"))) == "9998-12"
    assert domain.month_label(domain.month_of_micros(0, ZoneInfo("UTC"))) == "1970-01"
    assert domain.month_label(domain.month_of_micros(0, NEW_YORK)) == "1969-12"


def test_month_index_arithmetic() -> None:
    december = domain.month_of(at("2025-12-15T12:00:00+00:00"), ZoneInfo("UTC"))
    january = domain.month_of(at("2026-01-15T12:00:00+00:00"), ZoneInfo("UTC"))
    assert january - december == 1
    assert december == 2025 * 12 + 11


@pytest.mark.parametrize("label", ["2026-01", "2026-12", "1999-07", "0001-01"])
def test_month_label_round_trip(label: str) -> None:
    assert domain.month_label(domain.month_from_label(label)) == label


@pytest.mark.parametrize("label", ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", "2026", ""])
def test_month_from_label_rejects_other_shapes(label: str) -> None:
    with pytest.raises(ValueError):
        domain.month_from_label(label)


def test_month_start_is_the_first_day() -> None:
    assert domain.month_start(domain.month_from_label("2026-02")) == date(2026, 2, 1)
    assert domain.month_start(domain.month_from_label("2025-12")) == date(2025, 12, 1)


# --- retention -----------------------------------------------------------------------------------


def test_retention_counts_the_current_month() -> None:
    now = at("2026-03-15T12:00:00+00:00")
    oldest = domain.oldest_retained_month(now, ZoneInfo("UTC"), 13)
    assert domain.month_label(oldest) == "2025-03"
    assert domain.oldest_retained_month(now, ZoneInfo("UTC"), 1) == domain.month_of(
        now, ZoneInfo("UTC")
    )


def test_retention_follows_the_zone() -> None:
    # Already April in Berlin, so the oldest kept month moves on a month earlier than in UTC.
    now = at("2026-03-31T22:30:00+00:00")
    assert domain.month_label(domain.oldest_retained_month(now, BERLIN, 13)) == "2025-04"
    assert domain.month_label(domain.oldest_retained_month(now, ZoneInfo("UTC"), 13)) == "2025-03"


# --- tenure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("months_since_signup", "bucket"),
    [
        (0, "new"),
        (1, "1-2m"),
        (2, "1-2m"),
        (3, "3-11m"),
        (11, "3-11m"),
        (12, "12m+"),
        (40, "12m+"),
        # A signup after the event (a corrected profile) is new, not a negative tenure.
        (-1, "new"),
        (-30, "new"),
    ],
)
def test_tenure_buckets(months_since_signup: int, bucket: str) -> None:
    event_month = domain.month_from_label("2026-03")
    assert domain.tenure_bucket(event_month - months_since_signup, event_month) == bucket


def test_tenure_without_signup_is_unknown() -> None:
    assert domain.tenure_bucket(None, domain.month_from_label("2026-03")) == domain.UNKNOWN


def test_tenure_buckets_are_the_documented_set() -> None:
    assert domain.TENURE_BUCKETS == ("new", "1-2m", "3-11m", "12m+")


# --- segments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "profile", "expected"),
    [
        ({"plan": "paid"}, {"plan": "free"}, "paid"),  # the event's own value first
        ({"region": "eu"}, {"plan": "free"}, "free"),  # then the profile's
        (None, {"plan": "vip"}, "vip"),
        ({}, {"plan": "vip"}, "vip"),
        ({"plan": ""}, {"plan": "vip"}, "vip"),  # an empty value is no value
        ({"plan": "paid"}, None, "paid"),
        (None, None, domain.UNKNOWN),
        ({"region": "eu"}, {"product": "docs"}, domain.UNKNOWN),
        (None, {"plan": ""}, domain.UNKNOWN),
    ],
)
def test_segment_value_precedence(
    event: dict[str, str] | None, profile: dict[str, str] | None, expected: str
) -> None:
    assert domain.user_attributes(("plan",), event, profile, None, 0) == (expected,)


def test_user_dimensions_put_extras_before_tenure_and_skip_reserved_names() -> None:
    assert domain.user_dimensions(()) == ("plan", "product", "region", "tenure")
    assert domain.user_dimensions(("company_size", "plan", "channel", "all", "tenure")) == (
        "plan",
        "product",
        "region",
        "company_size",
        "tenure",
    )


def test_user_attributes_mix_segments_and_tenure() -> None:
    march = domain.month_from_label("2026-03")
    attributes = domain.user_attributes(
        domain.user_dimensions(("company_size",)),
        {"plan": "paid"},
        {"plan": "free", "product": "docs", "company_size": "51+"},
        march - 4,
        march,
    )
    assert attributes == ("paid", "docs", domain.UNKNOWN, "51+", "3-11m")


def test_segment_keys_start_with_the_global_figure() -> None:
    keys = list(domain.segment_keys(("plan", "tenure"), ("free", "new")))
    assert keys == [("all", "all"), ("plan", "free"), ("tenure", "new")]
    with pytest.raises(ValueError):
        list(domain.segment_keys(("plan", "tenure"), ("free",)))


# --- CCI arithmetic ------------------------------------------------------------------------------


def test_cci_is_tickets_per_active_user() -> None:
    assert domain.cci(45, 10) == 4.5  # the article: a CCI of 4.5 is 4.5 contacts per customer
    assert domain.cci(0, 10) == 0.0
    assert domain.cci(3, 0) is None
    assert domain.cci(0, 0) is None


def test_contact_rate_is_a_percentage() -> None:
    assert domain.contact_rate_pct(28, 100) == pytest.approx(28.0)
    assert domain.contact_rate_pct(3, 2) == pytest.approx(150.0)
    assert domain.contact_rate_pct(5, 0) is None


# The article's staffing table: customers × CCI 1.5 / 70 tickets per agent per month.
@pytest.mark.parametrize(
    ("customers", "expected_tickets", "agents", "headcount"),
    [(100, 150, 2.14, 3), (150, 225, 3.21, 4), (200, 300, 4.29, 5), (250, 375, 5.36, 6)],
)
def test_agents_needed_matches_the_article(
    customers: int, expected_tickets: int, agents: float, headcount: int
) -> None:
    tickets = customers * 1.5
    assert tickets == expected_tickets
    needed = domain.agents_needed(tickets, 70)
    assert round(needed, 2) == agents
    assert domain.headcount(needed) == headcount


def test_headcount_rounds_up_but_not_float_noise() -> None:
    assert domain.headcount(2.0) == 2
    assert domain.headcount(domain.agents_needed(140.0, 70)) == 2
    assert domain.headcount(2.0000000001) == 2
    assert domain.headcount(2.01) == 3
    assert domain.headcount(0.0) == 0


def test_agents_needed_rejects_a_non_positive_capacity() -> None:
    with pytest.raises(ValueError):
        domain.agents_needed(100, 0)
    with pytest.raises(ValueError):
        domain.agents_needed(100, -5)


def test_month_of_accepts_any_aware_datetime() -> None:
    moment = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)
    assert domain.month_label(domain.month_of(moment, BERLIN)) == "2026-04"


# --- the contact-rate target range ---------------------------------------------------------------

DEFAULT = domain.DEFAULT_TARGET_RANGE


@pytest.mark.parametrize(
    ("tickets", "active_users", "expected"),
    [
        (19, 100, "below"),
        (20, 100, "within"),  # both ends belong to the range
        (25, 100, "within"),
        (30, 100, "within"),
        (31, 100, "above"),
        (0, 5, "below"),
        (3, 2, "above"),
        (7, 0, None),  # no active users: no rate, no band
        (0, 0, None),
    ],
)
def test_band_against_the_default_range(tickets: int, active_users: int, expected: str) -> None:
    assert domain.band(tickets, active_users, DEFAULT) == expected


def test_band_is_judged_on_the_exact_rate_not_the_float() -> None:
    target = domain.parse_target_range("20,28")
    # 7 of 25 is exactly 28%, but 100 * (7 / 25) is 28.000000000000004.
    assert domain.contact_rate_pct(7, 25) > 28
    assert domain.band(7, 25, target) == "within"
    # 29 of 50 is exactly 58%, but 57.99999999999999 as a float.
    assert domain.band(29, 50, domain.parse_target_range("58,60")) == "within"


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("20,30", 20, 30),
        (" 2.5 , 7.75 ", Fraction(5, 2), Fraction(31, 4)),
        ("0,.5", 0, Fraction(1, 2)),
    ],
)
def test_parse_target_range(text: str, low: Fraction, high: Fraction) -> None:
    target = domain.parse_target_range(text)
    assert (target.low, target.high) == (low, high)


@pytest.mark.parametrize("text", ["30,20", "20,20", "20", "1,2,3", "-1,5", "a,b", "20%,30%", ""])
def test_a_bad_target_range_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"LOW,HIGH|low end"):
        domain.parse_target_range(text)


def test_guidance_follows_the_article_and_names_the_range() -> None:
    guidance = DEFAULT.guidance()
    assert guidance["below"].startswith("Below 20%: signals possible disengagement")
    assert guidance["within"] == "20–30%: healthy range; monitor for potential issues."
    assert guidance["above"].startswith("Above 30%: frequent contact")
    assert str(DEFAULT) == "20,30"
