"""Valid events + the user's profile → facts with month, event time and segment attributes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from streams import domain
from streams.pipeline.enrich import (
    FACTS_FORMAT,
    ActiveFact,
    Enricher,
    Profile,
    TicketFact,
    decode_facts,
    decode_facts_record,
    encode_fact,
    encode_facts,
    epoch_micros,
    newer_profile,
    profile_from_event,
)
from streams.pipeline.records import split_to_fit
from streams.pipeline.validate import (
    FUTURE_TIMESTAMP,
    TOO_LATE,
    ActivityEvent,
    InvalidEvent,
    TicketEvent,
    UserProfile,
    parse_timestamp,
)

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
MARCH = domain.month_from_label("2026-03")
DIMENSIONS = domain.user_dimensions(())  # plan, product, region, tenure


def profile(
    signup: str, segments: dict[str, str], updated: str = "2026-01-01T00:00:00Z"
) -> Profile:
    return profile_from_event(
        UserProfile(
            "u-1", datetime.fromisoformat(signup), segments, datetime.fromisoformat(updated)
        ),
        UTC_ZONE,
    )


def enricher(
    profiles: dict[str, Profile] | None = None,
    *,
    zone: ZoneInfo = UTC_ZONE,
    active: frozenset[str] = frozenset(),
    dimensions: tuple[str, ...] = DIMENSIONS,
    retain_months: int = 13,
    max_future_seconds: int = 86400,
) -> Enricher:
    book = profiles or {}
    return Enricher(
        zone=zone,
        dimensions=dimensions,
        active_activities=active,
        retain_months=retain_months,
        max_future_micros=max_future_seconds * 1_000_000,
        profile_of=book.get,
    )


def activity(
    at: str = "2026-03-04T10:00:00Z",
    kind: str | None = "login",
    segments: dict[str, str] | None = None,
    user_id: str = "u-1",
) -> ActivityEvent:
    return ActivityEvent(user_id, datetime.fromisoformat(at), kind, segments)


def ticket(
    at: str = "2026-03-04T10:00:00Z",
    channel: str | None = "email",
    segments: dict[str, str] | None = None,
    user_id: str = "u-1",
) -> TicketEvent:
    return TicketEvent("t-1", user_id, datetime.fromisoformat(at), channel, segments)


PAID_EU = profile("2026-01-10T09:00:00Z", {"plan": "paid", "product": "docs", "region": "eu"})


# --- segments ------------------------------------------------------------------------------------


def test_event_segments_win_over_the_profile() -> None:
    fact = enricher({"u-1": PAID_EU}).active_fact(activity(segments={"plan": "vip"}), NOW)
    assert fact == ActiveFact(
        "u-1",
        MARCH,
        epoch_micros(datetime(2026, 3, 4, 10, tzinfo=UTC)),
        ("vip", "docs", "eu", "1-2m"),
    )


def test_profile_fills_what_the_event_lacks() -> None:
    fact = enricher({"u-1": PAID_EU}).active_fact(activity(segments={"region": "us"}), NOW)
    assert fact is not None
    assert fact.attributes == ("paid", "docs", "us", "1-2m")


def test_without_profile_everything_not_on_the_event_is_unknown() -> None:
    fact = enricher().active_fact(activity(segments={"plan": "free"}), NOW)
    assert fact is not None
    assert fact.attributes == ("free", "unknown", "unknown", "unknown")


def test_empty_event_value_falls_back_to_the_profile() -> None:
    fact = enricher({"u-1": PAID_EU}).ticket_fact(ticket(segments={"plan": ""}), NOW)
    assert fact.attributes[0] == "paid"


def test_extra_dimensions_come_before_tenure() -> None:
    dims = domain.user_dimensions(("company_size",))
    book = {"u-1": profile("2026-03-01T00:00:00Z", {"plan": "free", "company_size": "51+"})}
    fact = enricher(book, dimensions=dims).active_fact(activity(), NOW)
    assert fact is not None
    assert fact.attributes == ("free", "unknown", "unknown", "51+", "new")


# --- tenure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signup", "bucket"),
    [
        ("2026-03-01T00:00:00Z", "new"),
        ("2026-02-28T23:59:59Z", "1-2m"),
        ("2026-01-31T00:00:00Z", "1-2m"),
        ("2025-12-31T00:00:00Z", "3-11m"),
        ("2025-04-01T00:00:00Z", "3-11m"),
        ("2025-03-31T00:00:00Z", "12m+"),
        ("2020-01-01T00:00:00Z", "12m+"),
        ("2026-05-01T00:00:00Z", "new"),  # signup after the event
    ],
)
def test_tenure_from_the_profile_signup(signup: str, bucket: str) -> None:
    book = {"u-1": profile(signup, {"plan": "free"})}
    fact = enricher(book).ticket_fact(ticket(), NOW)
    assert fact.attributes[DIMENSIONS.index("tenure")] == bucket


def test_tenure_counts_months_of_the_event_not_of_now() -> None:
    book = {"u-1": profile("2025-12-10T09:00:00Z", {})}
    fact = enricher(book).ticket_fact(ticket(at="2025-12-20T00:00:00Z"), NOW)
    assert fact.attributes[-2] == "new"
    assert fact.month == domain.month_from_label("2025-12")


def test_tenure_without_profile_is_unknown() -> None:
    assert enricher().ticket_fact(ticket(), NOW).attributes[-2] == "unknown"


def test_months_are_taken_in_the_configured_zone() -> None:
    # 22:30Z on March 31st is 00:30 on April 1st in Berlin (summer time).
    late_now = datetime(2026, 4, 2, tzinfo=UTC)
    fact = enricher(zone=BERLIN).active_fact(activity(at="2026-03-31T22:30:00Z"), late_now)
    assert fact is not None
    assert domain.month_label(fact.month) == "2026-04"


# --- channel -------------------------------------------------------------------------------------


def test_channel_is_the_last_ticket_attribute() -> None:
    fact = enricher({"u-1": PAID_EU}).ticket_fact(ticket(channel="chat"), NOW)
    assert fact == TicketFact(
        "t-1",
        MARCH,
        epoch_micros(datetime(2026, 3, 4, 10, tzinfo=UTC)),
        ("paid", "docs", "eu", "1-2m", "chat"),
        "u-1",
    )


def test_missing_channel_is_unknown() -> None:
    assert enricher().ticket_fact(ticket(channel=None), NOW).attributes[-1] == "unknown"


# --- active activity types -----------------------------------------------------------------------


def test_every_activity_counts_when_no_types_are_configured() -> None:
    for kind in ("login", "page_view", None):
        assert enricher().active_fact(activity(kind=kind), NOW) is not None


def test_only_configured_activity_types_make_a_user_active() -> None:
    strict = enricher(active=frozenset({"login", "purchase"}))
    for kind in ("login", "purchase"):
        fact = strict.active_fact(activity(kind=kind), NOW)
        assert fact is not None and fact.user_id == "u-1", kind
    assert strict.active_fact(activity(kind="page_view"), NOW) is None
    assert strict.active_fact(activity(kind=None), NOW) is None


# --- event time outside the kept window ----------------------------------------------------------


def reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(InvalidEvent) as caught:
        call()
    return caught.value.reason


def test_months_older_than_retained_are_too_late() -> None:
    # 13 months kept as of March 2026: March 2025 is the oldest.
    kept = enricher()
    oldest = kept.active_fact(activity(at="2025-03-01T00:00:00Z"), NOW)
    assert oldest is not None and domain.month_label(oldest.month) == "2025-03"
    assert reason(lambda: kept.active_fact(activity(at="2025-02-28T23:59:59Z"), NOW)) == TOO_LATE
    assert reason(lambda: kept.ticket_fact(ticket(at="2024-12-01T00:00:00Z"), NOW)) == TOO_LATE
    one_month = enricher(retain_months=1)
    assert reason(lambda: one_month.ticket_fact(ticket(at="2026-02-28T12:00:00Z"), NOW)) == TOO_LATE


def test_too_late_uses_the_zone() -> None:
    # 2025-02-28T23:30Z is already March 2025 in Berlin, the oldest month kept there.
    fact = enricher(zone=BERLIN).ticket_fact(ticket(at="2025-02-28T23:30:00Z"), NOW)
    assert domain.month_label(fact.month) == "2025-03"
    assert (
        reason(lambda: enricher().ticket_fact(ticket(at="2025-02-28T23:30:00Z"), NOW)) == TOO_LATE
    )


def test_far_future_is_a_future_timestamp() -> None:
    limit = NOW + timedelta(seconds=3600)
    within = enricher(max_future_seconds=3600)
    assert within.ticket_fact(ticket(at=limit.isoformat()), NOW).ts == epoch_micros(limit)
    beyond = (limit + timedelta(microseconds=1)).isoformat()
    assert reason(lambda: within.ticket_fact(ticket(at=beyond), NOW)) == FUTURE_TIMESTAMP
    assert reason(lambda: within.active_fact(activity(at=beyond), NOW)) == FUTURE_TIMESTAMP


def test_the_time_bounds_follow_each_batch_now() -> None:
    """The bounds are kept between calls: a later ``now`` (the next batch) must renew them."""
    kept = enricher(max_future_seconds=3600)
    next_year = NOW + timedelta(days=365)
    assert kept.ticket_fact(ticket(at="2025-03-01T00:00:00Z"), NOW).ts
    assert reason(lambda: kept.ticket_fact(ticket(at="2025-03-01T00:00:00Z"), next_year)) == (
        TOO_LATE
    )
    assert reason(lambda: kept.ticket_fact(ticket(at="2026-06-01T00:00:00Z"), NOW)) == (
        FUTURE_TIMESTAMP
    )
    assert kept.ticket_fact(ticket(at="2026-06-01T00:00:00Z"), next_year).ts


def test_inactive_types_are_dropped_before_the_time_checks() -> None:
    # Not counted either way, so not worth a dead letter.
    strict = enricher(active=frozenset({"login"}))
    assert strict.active_fact(activity(at="2020-01-01T00:00:00Z", kind="page_view"), NOW) is None


# --- profiles ------------------------------------------------------------------------------------


def test_profile_from_event_takes_the_signup_month_in_the_zone() -> None:
    event = UserProfile(
        "u-1",
        datetime(2026, 3, 31, 22, 30, tzinfo=UTC),
        {"plan": "paid"},
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert profile_from_event(event, BERLIN).signup_month == domain.month_from_label("2026-04")
    assert profile_from_event(event, UTC_ZONE).signup_month == MARCH
    assert profile_from_event(event, UTC_ZONE).updated_at == epoch_micros(event.updated_at)


def test_newest_profile_wins_whatever_the_arrival_order() -> None:
    versions = [
        profile("2025-01-01T00:00:00Z", {"plan": "free"}, updated="2025-01-01T00:00:00Z"),
        profile("2025-01-01T00:00:00Z", {"plan": "paid"}, updated="2025-06-01T00:00:00Z"),
        profile("2025-01-01T00:00:00Z", {"plan": "vip"}, updated="2026-02-01T00:00:00Z"),
    ]
    for order in itertools.permutations(versions):
        held: Profile | None = None
        for candidate in order:
            held = newer_profile(held, candidate)
        assert held is not None
        assert held.segments == {"plan": "vip"}


def test_epoch_micros_is_exact() -> None:
    moment = datetime(2026, 3, 4, 10, 11, 12, 345678, tzinfo=UTC)
    assert epoch_micros(moment) == 1772619072_345678
    assert epoch_micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0


# Active facts first: a record holds them before the tickets.
FACTS: list[ActiveFact | TicketFact] = [
    ActiveFact("u-1", MARCH, 123, ("free", "docs", "eu", "new")),
    ActiveFact("u-\u00e9", MARCH, 2**62, ("a" * 256, "", "eu", "12m+")),
    TicketFact("t-1", MARCH, 456, ("free", "docs", "eu", "new", "chat"), "u-1"),
]


def test_fact_wire_format_round_trips() -> None:
    record = encode_facts(FACTS)
    assert record[:1] == FACTS_FORMAT
    decoded = decode_facts_record(record)
    assert decoded == FACTS
    assert [type(fact) for fact in decoded] == [type(fact) for fact in FACTS]
    assert all(type(fact.attributes) is tuple for fact in decoded)


def test_facts_records_of_the_json_format_before_are_still_read() -> None:
    """Rolling upgrade: a worker on new code reads the facts topic's records of old code (JSON
    rows, tickets with and without their user); bytes as that code wrote them."""
    old_record = (
        b'[["a","u-1",24314,123,["free","docs","eu","new"]],'
        b'["t","t-1",24314,456,["free","docs","eu","new","chat"],"u-1"],'
        b'["t","t-2",24314,789,["free","docs","eu","new","chat"]]]'
    )
    assert decode_facts_record(old_record) == [
        ActiveFact("u-1", 24314, 123, ("free", "docs", "eu", "new")),
        TicketFact("t-1", 24314, 456, ("free", "docs", "eu", "new", "chat"), "u-1"),
        TicketFact("t-2", 24314, 789, ("free", "docs", "eu", "new", "chat"), ""),
    ]
    assert decode_facts([encode_fact(fact) for fact in FACTS]) == FACTS


def test_a_facts_record_of_neither_format_is_refused() -> None:
    with pytest.raises(ValueError, match="not a facts record"):
        decode_facts_record(b"{}")


def test_facts_records_split_under_the_size_limit() -> None:
    facts = [
        ActiveFact(f"user-{n:06d}", MARCH, n, ("free", "docs", "eu", "new")) for n in range(3000)
    ]
    limit = 20_000
    records = split_to_fit(facts, encode_facts, limit)
    assert len(records) > 1 and all(len(record) <= limit for record in records)
    assert [fact for record in records for fact in decode_facts_record(record)] == facts


def test_profile_values_held_between_events_follow_a_newer_profile() -> None:
    """Events without segments of their own take the profile's values, held per user: the same
    attributes as the rule gives, and a newer profile of the user replaces them."""
    profiles = {"u-1": Profile(domain.month_from_label("2026-01"), {"plan": "free"}, 1)}
    enriching = enricher(profiles)
    dimensions = enriching.dimensions

    def expected(event_segments: dict[str, str] | None, month: int) -> tuple[str, ...]:
        profile = profiles["u-1"]
        return domain.user_attributes(
            dimensions, event_segments, profile.segments, profile.signup_month, month
        )

    for at, segments in [
        ("2026-03-02T10:00:00Z", None),
        ("2026-01-02T10:00:00Z", None),
        ("2026-03-03T10:00:00Z", {"plan": "paid"}),
        ("2026-03-03T10:00:00Z", {}),
    ]:
        fact = enriching.ticket_fact(ticket(at=at, segments=segments), NOW)
        assert fact.attributes[:-1] == expected(segments, fact.month)
    profiles["u-1"] = Profile(
        domain.month_from_label("2025-01"), {"plan": "paid", "region": "eu"}, 2
    )
    fact = enriching.ticket_fact(ticket(at="2026-03-02T10:00:00Z"), NOW)
    assert (
        fact.attributes[:-1] == expected(None, fact.month) == ("paid", domain.UNKNOWN, "eu", "12m+")
    )


def test_held_attributes_follow_the_month_of_each_event() -> None:
    """A user's attributes are held with the month of their last event: events of one user in
    alternating months (tenure differs by month) each get the rule's attributes."""
    signup = domain.month_from_label("2026-01")
    profiles = {"u-1": Profile(signup, {"plan": "free", "product": "docs"}, 1)}
    enriching = enricher(profiles)
    for at, tenure in [
        ("2026-03-02T10:00:00Z", "1-2m"),
        ("2026-03-09T10:00:00Z", "1-2m"),
        ("2026-01-31T23:59:59.999999Z", "new"),
        ("2026-03-01T00:00:00Z", "1-2m"),
        ("2026-02-28T23:59:59Z", "1-2m"),
        ("2026-01-01T00:00:00Z", "new"),
    ]:
        fact = enriching.active_fact(activity(at=at), NOW)
        assert fact is not None and type(fact) is ActiveFact
        assert fact.attributes == ("free", "docs", domain.UNKNOWN, tenure), at
        assert fact.attributes == domain.user_attributes(
            DIMENSIONS, None, profiles["u-1"].segments, signup, fact.month
        )


@pytest.mark.parametrize(
    ("zone", "at", "now", "month"),
    [
        # A leap second is the minute's last µs: still the month it ends.
        ("UTC", "2026-02-28T23:59:60Z", NOW, "2026-02"),
        ("UTC", "2026-02-28T23:59:60.5-01:00", NOW, "2026-03"),  # 00:59:59.999999Z
        ("America/Sao_Paulo", "2026-02-28T23:59:60-03:00", NOW, "2026-02"),
        ("America/Sao_Paulo", "2026-03-01T00:00:00-03:00", NOW, "2026-03"),
        # Kolkata (+05:30): March starts at 18:30 UTC on the last day of February.
        ("Asia/Kolkata", "2026-02-28T18:29:59.999999Z", NOW, "2026-02"),
        ("Asia/Kolkata", "2026-02-28T18:30:00Z", NOW, "2026-03"),
        ("Asia/Kolkata", "2026-02-28T18:30:00.000001+00:00", NOW, "2026-03"),
        # Berlin: winter time (+01:00) on March 1.
        ("Europe/Berlin", "2026-02-28T22:59:59.999999Z", NOW, "2026-02"),
        ("Europe/Berlin", "2026-02-28T23:00:00Z", NOW, "2026-03"),
        # The last accepted year, in zones behind and ahead of UTC.
        (
            "Pacific/Niue",
            "9998-12-31T23:59:59.999999-11:00",
            datetime(9999, 1, 2, tzinfo=UTC),
            "9998-12",
        ),
        (
            "Pacific/Kiritimati",
            "9998-12-31T09:59:59.999999Z",
            datetime(9999, 1, 2, tzinfo=UTC),
            "9998-12",
        ),
        ("Pacific/Kiritimati", "9998-12-31T10:00:00Z", datetime(9999, 1, 2, tzinfo=UTC), "9999-01"),
    ],
)
def test_the_month_of_a_parsed_timestamp_in_the_zone(
    zone: str, at: str, now: datetime, month: str
) -> None:
    """Parsing and enrichment together: offsets, leap seconds, month boundaries, year 9998."""
    enriching = enricher(zone=ZoneInfo(zone))
    moment = parse_timestamp(at, "created_at")
    fact = enriching.ticket_fact(TicketEvent("t-1", "u-1", moment, "chat", None), now)
    assert domain.month_label(fact.month) == month
    assert fact.ts == epoch_micros(moment)
    assert domain.month_label(domain.month_of(moment, ZoneInfo(zone))) == month


def test_too_late_times_are_named_by_month_and_stay_out_of_the_month_cache() -> None:
    """Input can name any day since 1970: a too-late time gets its month by the plain conversion,
    so the cache of months per day holds only days of the kept months."""
    enriching = enricher(zone=ZoneInfo("Asia/Kolkata"))
    domain._day_months.cache_clear()
    for year in range(1970, 2025):
        for number in range(1, 13):
            at = f"{year}-{number:02d}-01T00:10:00+05:30"  # the first day in Kolkata
            with pytest.raises(InvalidEvent) as caught:
                enriching.ticket_fact(ticket(at=at), NOW)
            assert caught.value.reason == TOO_LATE
            assert caught.value.detail.startswith(f"month {year}-{number:02d} is older than")
    assert domain._day_months.cache_info().currsize == 0
    assert enriching.ticket_fact(ticket(at="2026-03-01T00:10:00+05:30"), NOW).month == MARCH
    assert domain._day_months.cache_info().currsize == 1
