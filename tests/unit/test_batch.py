"""The reference recount on small inputs whose figures are worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.pipeline import recount as batch
from streams.settings import Settings

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
SETTINGS = Settings()  # UTC, 13 months kept, every activity counts


def line(**fields: Any) -> bytes:
    return orjson.dumps({key: value for key, value in fields.items() if value is not None})


def act(user: str, at: str, kind: str = "login", segments: dict[str, str] | None = None) -> bytes:
    return line(user_id=user, occurred_at=at, activity=kind, segments=segments)


def tkt(
    ticket_id: str,
    user: str,
    at: str,
    channel: str | None = None,
    segments: dict[str, str] | None = None,
) -> bytes:
    return line(
        ticket_id=ticket_id, user_id=user, created_at=at, channel=channel, segments=segments
    )


def prof(user: str, signup: str, updated: str = "2026-01-01T00:00:00Z", **segments: str) -> bytes:
    return line(user_id=user, signup_at=signup, segments=segments, updated_at=updated)


PROFILES = [
    # Signed up in January: "1-2m" in March.
    prof("u1", "2026-01-05T10:00:00Z", plan="free", product="docs", region="eu"),
    prof("u2", "2024-01-01T00:00:00Z", plan="paid", product="boards", region="us"),
    # u3 and u4 have no profile.
]


def month_rows(figures: dict[batch.FigureKey, batch.Figure], month: str) -> dict[str, batch.Figure]:
    return {f"{d}|{s}": counts for (m, d, s), counts in figures.items() if m == month}


# --- the basic case ------------------------------------------------------------------------------


def basic_recount(
    activity_order: int = 1, ticket_order: int = 1, profile_order: int = 1
) -> batch.Recount:
    activity = [
        act("u1", "2026-03-02T08:00:00Z"),
        act("u1", "2026-03-05T08:00:00Z", "page_view"),  # active twice, counted once
        act("u1", "2026-03-05T08:00:00Z", "page_view"),
        act("u2", "2026-03-03T09:00:00Z"),
        act("u3", "2026-03-04T10:00:00Z", segments={"plan": "vip"}),
    ]
    tickets = [
        tkt("t1", "u1", "2026-03-06T10:00:00Z", "email"),
        tkt("t1", "u1", "2026-03-06T10:00:00Z", "email"),  # resent
        tkt("t2", "u1", "2026-03-07T10:00:00Z", "chat"),
        tkt("t3", "u3", "2026-03-08T10:00:00Z"),  # no channel
        tkt("t4", "u4", "2026-03-09T10:00:00Z", "phone"),  # u4: no activity, no profile
        tkt("t1", "u1", "2026-03-06T10:00:00Z", "email"),  # resent again, later
    ]
    return batch.recount(
        activity[::activity_order],
        tickets[::ticket_order],
        PROFILES[::profile_order],
        NOW,
        SETTINGS,
    )


BASIC_MARCH = {
    "all|all": (4, 3),
    "plan|free": (2, 1),
    "plan|paid": (0, 1),
    # u3's activity says vip, but its ticket carries no plan and u3 has no profile: a ticket takes
    # its segments from itself and the profile only, never from the user's activity.
    "plan|vip": (0, 1),
    "plan|unknown": (2, 0),  # t3 and u4's t4, with no active user behind them
    "product|docs": (2, 1),
    "product|boards": (0, 1),
    "product|unknown": (2, 1),
    "region|eu": (2, 1),
    "region|us": (0, 1),
    "region|unknown": (2, 1),
    "tenure|1-2m": (2, 1),
    "tenure|12m+": (0, 1),
    "tenure|unknown": (2, 1),
    # A channel's denominator is every user active in the month.
    "channel|email": (1, 3),
    "channel|chat": (1, 3),
    "channel|phone": (1, 3),
    "channel|unknown": (1, 3),
}


def test_basic_month_by_hand() -> None:
    result = basic_recount()
    assert month_rows(result.figures, "2026-03") == BASIC_MARCH
    assert {month for month, _, _ in result.figures} == {"2026-03"}
    assert result.active_user_months == 3
    assert result.distinct_tickets == 4
    assert not result.dead_letters
    assert not result.invalid_profiles


@pytest.mark.parametrize("order", [(1, 1, 1), (-1, -1, -1), (-1, 1, -1)])
def test_arrival_order_changes_nothing(order: tuple[int, int, int]) -> None:
    assert basic_recount(*order).figures == basic_recount().figures


# --- conflicting versions ------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_earliest_activity_decides_the_user_month(reverse: bool) -> None:
    activity = [
        act("u1", "2026-03-10T00:00:00Z", segments={"plan": "paid"}),  # upgraded later on
        act("u1", "2026-03-02T00:00:00Z"),  # the profile says free: this one wins
        act("u1", "2026-02-20T00:00:00Z", segments={"plan": "vip"}),  # February is its own month
    ]
    result = batch.recount(activity[::-1] if reverse else activity, [], PROFILES, NOW, SETTINGS)
    march = month_rows(result.figures, "2026-03")
    assert march["plan|free"] == (0, 1)
    assert "plan|paid" not in march
    assert month_rows(result.figures, "2026-02")["plan|vip"] == (0, 1)
    assert result.active_user_months == 2


@pytest.mark.parametrize("reverse", [False, True])
def test_equal_times_are_decided_by_the_smaller_attributes(reverse: bool) -> None:
    activity = [
        act("u3", "2026-03-02T00:00:00Z", segments={"plan": "vip"}),
        act("u3", "2026-03-02T00:00:00Z", segments={"plan": "free"}),
    ]
    tickets = [
        tkt("t1", "u3", "2026-03-02T00:00:00Z", "web"),
        tkt("t1", "u3", "2026-03-02T00:00:00Z", "chat"),
    ]
    if reverse:
        activity, tickets = activity[::-1], tickets[::-1]
    march = month_rows(batch.recount(activity, tickets, [], NOW, SETTINGS).figures, "2026-03")
    assert march["plan|free"] == (0, 1)
    assert "plan|vip" not in march
    assert march["plan|unknown"] == (1, 0)  # the ticket carries no plan and u3 has no profile
    assert march["channel|chat"] == (1, 1)
    assert "channel|web" not in march


@pytest.mark.parametrize("reverse", [False, True])
def test_earliest_ticket_version_decides_month_and_attributes(reverse: bool) -> None:
    tickets = [
        tkt("t1", "u1", "2026-03-01T00:30:00+01:00", "email"),  # = Feb 28th 23:30 UTC
        tkt("t1", "u1", "2026-03-01T00:00:00Z", "chat"),
    ]
    activity = [act("u1", "2026-03-05T00:00:00Z")]
    result = batch.recount(activity, tickets[::-1] if reverse else tickets, PROFILES, NOW, SETTINGS)
    assert month_rows(result.figures, "2026-02") == {
        "all|all": (1, 0),
        "plan|free": (1, 0),
        "product|docs": (1, 0),
        "region|eu": (1, 0),
        "tenure|1-2m": (1, 0),
        "channel|email": (1, 0),
    }
    march = month_rows(result.figures, "2026-03")
    assert march["all|all"] == (0, 1)
    assert march["plan|free"] == (0, 1)
    assert not any(key.startswith("channel|") for key in march)
    assert result.distinct_tickets == 1


def test_months_follow_the_configured_zone() -> None:
    berlin = Settings(timezone="Europe/Berlin")
    activity = [act("u2", "2026-02-28T23:30:00Z")]  # 00:30 on March 1st in Berlin
    result = batch.recount(activity, [], PROFILES, NOW, berlin)
    assert set(result.figures) == {
        ("2026-03", "all", "all"),
        ("2026-03", "plan", "paid"),
        ("2026-03", "product", "boards"),
        ("2026-03", "region", "us"),
        ("2026-03", "tenure", "12m+"),
    }


# --- profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_newest_profile_wins(reverse: bool) -> None:
    profiles = [
        prof("u1", "2026-01-05T10:00:00Z", updated="2026-01-05T10:00:00Z", plan="free"),
        prof("u1", "2026-01-05T10:00:00Z", updated="2026-03-10T00:00:00Z", plan="paid"),
        prof("u1", "2026-01-05T10:00:00Z", updated="2026-02-01T00:00:00Z", plan="vip"),
    ]
    activity = [act("u1", "2026-03-02T00:00:00Z")]
    result = batch.recount(activity, [], profiles[::-1] if reverse else profiles, NOW, SETTINGS)
    assert month_rows(result.figures, "2026-03")["plan|paid"] == (0, 1)


def test_extra_dimensions_get_rows() -> None:
    extra = Settings(extra_dimensions=("company_size",))
    profiles = [prof("u1", "2026-01-05T10:00:00Z", plan="free", company_size="51+")]
    activity = [act("u1", "2026-03-02T00:00:00Z"), act("u2", "2026-03-02T00:00:00Z")]
    tickets = [tkt("t1", "u1", "2026-03-03T00:00:00Z", segments={"company_size": "11-50"})]
    march = month_rows(batch.recount(activity, tickets, profiles, NOW, extra).figures, "2026-03")
    assert march["company_size|51+"] == (0, 1)
    assert march["company_size|unknown"] == (0, 1)
    assert march["company_size|11-50"] == (1, 0)  # the ticket's own value wins


# --- what is not counted -------------------------------------------------------------------------


def test_dead_letters_are_counted_by_reason_and_not_counted_as_figures() -> None:
    activity = [
        act("u1", "2026-03-02T00:00:00Z"),
        b"{not json",
        b"[1, 2]",
        act("u9", "2025-01-15T00:00:00Z"),  # January 2025 is older than the 13 months kept
        act("u9", "2026-03-17T12:00:01Z"),  # more than a day ahead of now
        line(user_id="u9"),  # no occurred_at
    ]
    tickets = [
        tkt("t1", "u1", "2026-03-03T00:00:00Z", "web"),
        tkt("t2", "u1", "2026-02-30T00:00:00Z", "web"),  # no such day
        line(ticket_id="t3", user_id=7, created_at="2026-03-03T00:00:00Z"),
        b"\xff\xfe",
        tkt("t4", "u1", "2026-03-16T11:00:00Z", "web"),  # ahead, but within a day: counted
    ]
    profiles = [*PROFILES, b'{"user_id": "u5"}', prof("u6", "9999-12-31T23:59:59-00:01")]
    activity.append(act("u1", "9999-12-31T23:59:59-00:01"))
    tickets.append(tkt("t5", "u1", "9999-12-31T23:59:59Z"))
    result = batch.recount(activity, tickets, profiles, NOW, SETTINGS)
    assert result.dead_letters == {
        "invalid_json": 1,
        "not_an_object": 1,
        "too_late": 1,
        "future_timestamp": 1,
        "missing_field": 1,
        "invalid_timestamp": 3,
        "wrong_type": 1,
        "invalid_utf8": 1,
    }
    assert result.invalid_profiles == {"missing_field": 1, "invalid_timestamp": 1}
    assert month_rows(result.figures, "2026-03") == {
        "all|all": (2, 1),
        "plan|free": (2, 1),
        "product|docs": (2, 1),
        "region|eu": (2, 1),
        "tenure|1-2m": (2, 1),
        "channel|web": (2, 1),
    }


def test_oversized_records_are_dead_letters() -> None:
    small = Settings(max_event_bytes=80)
    big = act("u1", "2026-03-02T00:00:00Z", segments={"plan": "x" * 100})
    result = batch.recount([big, act("u1", "2026-03-02T00:00:00Z")], [], [], NOW, small)
    assert result.dead_letters == {"oversized": 1}
    assert result.active_user_months == 1


def test_only_configured_activity_types_make_users_active() -> None:
    logins = Settings(active_activities=("login", "purchase"))
    activity = [
        act("u1", "2026-03-02T00:00:00Z", "page_view"),
        act("u2", "2026-03-02T00:00:00Z", "purchase"),
        act("u3", "2026-03-02T00:00:00Z", "page_view"),
        act("u3", "2026-03-09T00:00:00Z", "login"),
    ]
    result = batch.recount(activity, [], PROFILES, NOW, logins)
    assert result.inactive_activities == 2
    assert result.active_user_months == 2
    assert result.figures[("2026-03", "all", "all")] == (0, 2)
    assert ("2026-03", "plan", "free") not in result.figures


def test_nothing_in_nothing_out() -> None:
    result = batch.recount([], [], PROFILES, NOW, SETTINGS)
    assert result.figures == {}
    assert batch.expected_updates(result.figures) == []


# --- expected_updates ----------------------------------------------------------------------------


def test_expected_updates_shape_and_order() -> None:
    figures = {
        ("2026-03", "plan", "free"): (3, 2),
        ("2026-02", "all", "all"): (1, 4),
        ("2026-03", "all", "all"): (3, 0),
    }
    assert batch.expected_updates(figures) == [
        {
            "month": "2026-02",
            "dimension": "all",
            "segment": "all",
            "tickets": 1,
            "active_users": 4,
            "cci": 0.25,
            "contact_rate_pct": 25.0,
        },
        {
            "month": "2026-03",
            "dimension": "all",
            "segment": "all",
            "tickets": 3,
            "active_users": 0,
            "cci": None,
            "contact_rate_pct": None,
        },
        {
            "month": "2026-03",
            "dimension": "plan",
            "segment": "free",
            "tickets": 3,
            "active_users": 2,
            "cci": 1.5,
            "contact_rate_pct": 150.0,
        },
    ]


def test_expected_updates_match_the_emitted_shape() -> None:
    from streams import domain
    from streams.pipeline import emit

    row = batch.expected_updates({("2026-03", "plan", "free"): (3, 2)})[0]
    emitted = emit.update_value(domain.month_from_label("2026-03"), "plan", "free", 3, 2, 1, NOW)
    assert {key: emitted[key] for key in row} == row
    assert set(emitted) - set(row) == {"band", "version", "emitted_at"}


def test_a_leap_second_counts_in_the_month_it_ends() -> None:
    # 2026-02-28T23:59:60Z is the last instant of February, not March and not a dead letter.
    counted = batch.recount(
        [act("u1", "2026-02-28T23:59:60Z")],
        [tkt("t1", "u1", "2026-02-28T23:59:60.5Z")],
        [],
        NOW,
        SETTINGS,
    )
    assert not counted.dead_letters
    assert month_rows(counted.figures, "2026-02")["all|all"] == (1, 1)
    assert not month_rows(counted.figures, "2026-03")
