"""The dashboard's pure core: the newest record per key, the shaped answers, the parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.pipeline.emit import update_key, update_value
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, load_settings
from streams.web.dashboard.view import (
    BadParameter,
    DashboardView,
    LatestBook,
    is_alert,
    is_figure,
    read_params,
    segment_order,
    sse_event,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # retained with 3 months: 2026-09 … 2026-11
NOV, OCT, SEP, AUG = 2026 * 12 + 10, 2026 * 12 + 9, 2026 * 12 + 8, 2026 * 12 + 7


def figure(month: int, dimension: str, segment: str, tickets: int, users: int, version: int = 1):
    """A cci-updates record exactly as the worker publishes it."""
    key = update_key(month, dimension, segment).encode()
    value = update_value(month, dimension, segment, tickets, users, version, NOW)
    return key, orjson.dumps(value)


def alert(
    month: str, dimension: str, segment: str, state: str, version: int, rule: str = "high"
) -> tuple[bytes, bytes]:
    """A cci-alerts record in the alert helper's format."""
    value = {
        "rule": rule,
        "month": month,
        "dimension": dimension,
        "segment": segment,
        "state": state,
        "condition": "above",
        "threshold": 0.3,
        "cci": 0.4,
        "tickets": 40,
        "active_users": 100,
        "min_active_users": 50,
        "version": version,
        "at": "2026-11-23T12:00:00Z",
    }
    return f"{rule}|{month}|{dimension}|{segment}".encode(), orjson.dumps(value)


def make_view(*records: tuple[bytes, bytes], alerts: tuple[tuple[bytes, bytes], ...] = ()):
    view = DashboardView.from_settings(load_settings({"CCI_RETAIN_MONTHS": "3"}))
    for key, value in records:
        view.apply(TOPIC_UPDATES, key, value)
    for key, value in alerts:
        view.apply(TOPIC_ALERTS, key, value)
    return view


def segments(answer: dict[str, Any], dimension: str) -> dict[str, tuple[int, int]]:
    return {
        r["segment"]: (r["tickets"], r["active_users"]) for r in answer["dimensions"][dimension]
    }


# --- the newest record per key -------------------------------------------------------------------


def test_the_highest_version_wins_whatever_the_arrival_order() -> None:
    old_key, old = figure(NOV, "plan", "free", 1, 10, version=5)
    _, new = figure(NOV, "plan", "free", 2, 10, version=7)
    for order in ([old, new], [new, old], [new, old, new, old]):
        book = LatestBook(is_figure)
        for value in order:
            book.apply(old_key, value)
        assert book.records[old_key.decode()]["tickets"] == 2


def test_apply_says_whether_the_book_changed() -> None:
    key, value = figure(NOV, "plan", "free", 1, 10, version=5)
    book = LatestBook(is_figure)
    assert book.apply(key, value) is True
    assert book.apply(key, value) is False  # a resend
    assert book.apply(key, figure(NOV, "plan", "free", 9, 9, version=4)[1]) is False  # older
    assert book.apply(key, None) is True  # a tombstone deletes
    assert book.apply(key, None) is False
    assert book.records == {}


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        b'{"month": "2026-11", "dimension": "plan", "segment": "free", "tickets": 1}',
        b'{"month": "2026-13", "dimension": "plan", "segment": "free", "tickets": 1,'
        b' "active_users": 2, "version": 1}',
        b'{"month": "2026-11", "dimension": "plan", "segment": "free", "tickets": -1,'
        b' "active_users": 2, "version": 1}',
        b'{"month": "2026-11", "dimension": "plan", "segment": "free", "tickets": 1,'
        b' "active_users": 2, "version": true}',
    ],
)
def test_records_of_another_shape_are_ignored_and_counted(value: bytes) -> None:
    book = LatestBook(is_figure)
    assert book.apply(b"k", value) is False
    assert book.records == {} and book.ignored == 1


def test_a_record_without_key_is_ignored() -> None:
    book = LatestBook(is_figure)
    assert book.apply(None, figure(NOV, "plan", "free", 1, 1)[1]) is False
    assert book.ignored == 1


def test_alerts_need_a_rule_and_a_known_state() -> None:
    _, value = alert("2026-11", "plan", "free", "firing", 1)
    assert is_alert(orjson.loads(value))
    assert not is_alert({**orjson.loads(value), "state": "pending"})
    assert not is_alert({k: v for k, v in orjson.loads(value).items() if k != "rule"})


def test_records_are_routed_by_topic() -> None:
    view = make_view()
    assert view.apply(TOPIC_UPDATES, *figure(NOV, "plan", "free", 1, 2))
    assert view.apply(TOPIC_ALERTS, *alert("2026-11", "plan", "free", "firing", 1))
    assert not view.apply("user-activity", b"k", b"{}")
    assert len(view.figures.records) == 1 and len(view.alerts.records) == 1


# --- a month's figures ---------------------------------------------------------------------------


def test_the_default_month_is_the_newest_in_the_data() -> None:
    view = make_view(
        figure(OCT, "plan", "free", 3, 10),
        figure(SEP, "plan", "free", 1, 10),
    )
    answer = view.month_figures(None, None, NOW)
    assert answer["month"] == answer["newest_month"] == "2026-10"
    assert answer["months"] == ["2026-09", "2026-10"]
    assert segments(answer, "plan") == {"free": (3, 10)}
    free = answer["dimensions"]["plan"][0]
    assert free["cci"] == pytest.approx(0.3) and free["contact_rate_pct"] == pytest.approx(30.0)
    assert free["version"] == 1 and free["emitted_at"] == "2026-11-23T12:00:00.000Z"


def test_a_chosen_month_and_dimension() -> None:
    view = make_view(
        figure(NOV, "plan", "free", 3, 10),
        figure(OCT, "plan", "free", 1, 10),
        figure(OCT, "region", "eu", 2, 5),
    )
    answer = view.month_figures("2026-10", "plan", NOW)
    assert answer["month"] == "2026-10" and answer["newest_month"] == "2026-11"
    assert list(answer["dimensions"]) == ["plan"]
    assert segments(answer, "plan") == {"free": (1, 10)}
    # A dimension without figures that month answers with an empty list, not a missing key.
    assert view.month_figures("2026-09", "plan", NOW)["dimensions"] == {"plan": []}


def test_dimensions_and_segments_come_in_display_order() -> None:
    view = make_view(
        figure(NOV, "tenure", "unknown", 1, 1),
        figure(NOV, "tenure", "12m+", 1, 1),
        figure(NOV, "tenure", "new", 1, 1),
        figure(NOV, "tenure", "3-11m", 1, 1),
        figure(NOV, "channel", "web", 1, 4),
        figure(NOV, "plan", "vip", 1, 1),
        figure(NOV, "plan", "unknown", 1, 1),
        figure(NOV, "plan", "free", 1, 1),
        figure(NOV, "all", "all", 4, 4),
        figure(NOV, "company_size", "large", 1, 1),  # a dimension no longer configured
    )
    answer = view.month_figures(None, None, NOW)
    assert list(answer["dimensions"]) == ["all", "plan", "tenure", "channel", "company_size"]
    assert [r["segment"] for r in answer["dimensions"]["tenure"]] == [
        "new",
        "3-11m",
        "12m+",
        "unknown",
    ]
    assert [r["segment"] for r in answer["dimensions"]["plan"]] == ["free", "vip", "unknown"]
    assert segment_order("plan", "new") == (1, 0, "new")  # bucket names mean nothing elsewhere


def test_months_before_the_retained_ones_and_emptied_segments_are_not_shown() -> None:
    view = make_view(
        figure(AUG, "plan", "free", 9, 9),  # retention (3 months on NOW) ends before August
        figure(NOV, "plan", "free", 3, 10),
        figure(NOV, "plan", "paid", 0, 0),  # its last user moved to another segment
    )
    answer = view.month_figures(None, None, NOW)
    assert answer["months"] == ["2026-11"]
    assert segments(answer, "plan") == {"free": (3, 10)}
    assert view.month_figures("2026-08", None, NOW)["dimensions"] == {}


def test_months_past_retention_are_forgotten_once_and_not_taken_again() -> None:
    view = make_view(
        figure(AUG, "plan", "free", 9, 9),
        figure(SEP, "plan", "free", 3, 10),
        alerts=(alert("2026-08", "plan", "free", "firing", 1),),
    )

    assert view.forget_expired(NOW) is True  # August went: what is shown changed
    assert [r["month"] for r in view.figures.records.values()] == ["2026-09"]
    assert view.alerts.records == {}
    assert view.forget_expired(NOW) is False
    # A replayed record of a forgotten month is not kept again.
    assert view.apply(TOPIC_UPDATES, *figure(AUG, "plan", "paid", 1, 1)) is False
    assert len(view.figures.records) == 1


def test_nothing_yet() -> None:
    answer = make_view().month_figures(None, None, NOW)
    target = answer.pop("target_range")
    assert answer == {"month": None, "newest_month": None, "months": [], "dimensions": {}}
    assert (target["low_pct"], target["high_pct"]) == (20.0, 30.0)
    assert set(target["guidance"]) == {"below", "within", "above"}


def test_a_segment_without_active_users_has_no_ratio() -> None:
    answer = make_view(figure(NOV, "channel", "web", 2, 0)).month_figures(None, None, NOW)
    web = answer["dimensions"]["channel"][0]
    assert (web["tickets"], web["cci"], web["contact_rate_pct"]) == (2, None, None)
    assert web["band"] is None


def test_each_figure_carries_its_band_and_the_page_gets_the_range_and_guidance() -> None:
    view = DashboardView.from_settings(
        load_settings({"CCI_RETAIN_MONTHS": "3", "CCI_TARGET_RANGE_PCT": "5,12.5"})
    )
    for segment, tickets in (("free", 4), ("paid", 5), ("team", 13)):
        key = update_key(NOV, "plan", segment).encode()
        value = update_value(NOV, "plan", segment, tickets, 100, 1, NOW, target=view.target)
        view.apply(TOPIC_UPDATES, key, orjson.dumps(value))
    # A record published before bands existed: shown without one, not dropped.
    old = {k: v for k, v in update_value(NOV, "plan", "vip", 1, 1, 1, NOW).items() if k != "band"}
    view.apply(TOPIC_UPDATES, update_key(NOV, "plan", "vip").encode(), orjson.dumps(old))

    answer = view.month_figures(None, "plan", NOW)

    bands = {row["segment"]: row["band"] for row in answer["dimensions"]["plan"]}
    assert bands == {"free": "below", "paid": "within", "team": "above", "vip": None}
    target = answer["target_range"]
    assert (target["low_pct"], target["high_pct"]) == (5.0, 12.5)
    assert target["guidance"]["within"].startswith("5–12.5%: healthy range")
    assert target["guidance"]["below"].startswith("Below 5%")
    assert target["guidance"]["above"].startswith("Above 12.5%")


# --- history ---------------------------------------------------------------------------------


def test_history_lists_each_segments_retained_months_oldest_first() -> None:
    view = make_view(
        figure(NOV, "tenure", "new", 3, 10),
        figure(SEP, "tenure", "new", 1, 4),
        figure(OCT, "tenure", "12m+", 2, 20),
        figure(AUG, "tenure", "new", 5, 5),  # not retained
        figure(OCT, "plan", "free", 1, 1),
    )
    answer = view.history("tenure", NOW)
    assert answer["months"] == ["2026-09", "2026-10", "2026-11"]
    assert list(answer["dimensions"]) == ["tenure"]
    assert answer["dimensions"]["tenure"] == {
        "new": [
            {"month": "2026-09", "tickets": 1, "active_users": 4, "cci": 0.25,
             "contact_rate_pct": 25.0, "band": "within"},
            {"month": "2026-11", "tickets": 3, "active_users": 10, "cci": 0.3,
             "contact_rate_pct": 30.0, "band": "within"},
        ],
        "12m+": [
            {"month": "2026-10", "tickets": 2, "active_users": 20, "cci": 0.1,
             "contact_rate_pct": 10.0, "band": "below"},
        ],
    }  # fmt: skip
    assert list(answer["dimensions"]["tenure"]) == ["new", "12m+"]
    assert set(view.history(None, NOW)["dimensions"]) == {"tenure", "plan"}
    assert view.history("region", NOW)["dimensions"] == {"region": {}}


# --- alerts --------------------------------------------------------------------------------------


def test_firing_alerts_by_default_and_a_clear_replaces_a_fire() -> None:
    view = make_view(
        alerts=(
            alert("2026-11", "plan", "free", "firing", 1),
            alert("2026-11", "tenure", "new", "firing", 1),
            alert("2026-10", "plan", "free", "firing", 1),
            alert("2026-11", "tenure", "new", "cleared", 2),
            alert("2026-08", "plan", "free", "firing", 1),  # not retained
        )
    )
    firing = view.alert_list("firing", NOW)
    assert firing["state"] == "firing"
    assert [(a["month"], a["dimension"], a["segment"]) for a in firing["alerts"]] == [
        ("2026-11", "plan", "free"),
        ("2026-10", "plan", "free"),
    ]
    assert firing["alerts"][0]["threshold"] == 0.3  # the record as published
    cleared = view.alert_list("cleared", NOW)["alerts"]
    assert [(a["dimension"], a["segment"]) for a in cleared] == [("tenure", "new")]
    assert len(view.alert_list("all", NOW)["alerts"]) == 3


def test_alerts_of_one_month_in_dimension_and_segment_order() -> None:
    view = make_view(
        alerts=(
            alert("2026-11", "tenure", "new", "firing", 1),
            alert("2026-11", "plan", "vip", "firing", 1),
            alert("2026-11", "plan", "free", "firing", 1, rule="b"),
            alert("2026-11", "plan", "free", "firing", 1, rule="a"),
        )
    )
    alerts = view.alert_list("firing", NOW)["alerts"]
    assert [(a["dimension"], a["segment"], a["rule"]) for a in alerts] == [
        ("plan", "free", "a"),
        ("plan", "free", "b"),
        ("plan", "vip", "high"),
        ("tenure", "new", "high"),
    ]


def test_the_live_payload_holds_the_month_the_history_and_the_firing_alerts() -> None:
    view = make_view(
        figure(NOV, "plan", "free", 3, 10),
        figure(OCT, "plan", "free", 1, 10),
        alerts=(alert("2026-11", "plan", "free", "firing", 1),),
    )
    live = view.live("2026-10", NOW)
    assert live["cci"] == view.month_figures("2026-10", None, NOW)
    assert live["history"] == view.history(None, NOW)
    assert live["alerts"] == view.alert_list("firing", NOW)


def test_server_sent_event_format() -> None:
    message = sse_event("cci", {"a": [1, "x\ny"]})
    assert message == b'event: cci\ndata: {"a":[1,"x\\ny"]}\n\n'
    assert message.count(b"\n") == 3  # one data line, however the payload looks


# --- parameters ----------------------------------------------------------------------------------


def test_the_api_answers_with_its_parameters() -> None:
    view = make_view(figure(NOV, "plan", "free", 3, 10), figure(OCT, "plan", "free", 1, 10))
    assert view.api_cci({}, NOW) == view.month_figures(None, None, NOW)
    assert view.api_cci({"month": ["2026-10"], "dimension": ["plan"]}, NOW) == (
        view.month_figures("2026-10", "plan", NOW)
    )
    assert view.api_cci({"month": [""], "dimension": [""]}, NOW) == view.api_cci({}, NOW)
    assert view.api_history({"dimension": ["plan"]}, NOW) == view.history("plan", NOW)
    assert view.api_alerts({}, NOW) == view.alert_list("firing", NOW)
    assert view.api_alerts({"state": ["all"]}, NOW) == view.alert_list("all", NOW)
    assert view.stream_month({"month": ["2026-10"]}, NOW) == "2026-10"
    assert view.stream_month({}, NOW) is None


@pytest.mark.parametrize(
    ("call", "query", "parameter", "message"),
    [
        ("api_cci", {"month": ["2026-13"]}, "month", "expected YYYY-MM, got '2026-13'"),
        ("api_cci", {"month": ["11/2026"]}, "month", "expected YYYY-MM"),
        ("api_cci", {"month": ["2026-08"]}, "month", "older than the retained months"),
        ("api_cci", {"dimension": ["colour"]}, "dimension", "unknown dimension 'colour'"),
        ("api_cci", {"dimensions": ["plan"]}, "dimensions", "unknown parameter"),
        ("api_cci", {"month": ["2026-10", "2026-11"]}, "month", "given more than once"),
        ("api_history", {"month": ["2026-10"]}, "month", "takes dimension"),
        ("api_history", {"dimension": ["x"]}, "dimension", "one of all, plan, product"),
        ("api_alerts", {"state": ["open"]}, "state", "one of firing, cleared, all"),
        ("stream_month", {"month": ["soon"]}, "month", "expected YYYY-MM"),
        ("stream_month", {"dimension": ["plan"]}, "dimension", "takes month"),
    ],
)
def test_bad_parameters_are_named(
    call: str, query: dict[str, list[str]], parameter: str, message: str
) -> None:
    view = make_view(figure(NOV, "plan", "free", 3, 10))
    with pytest.raises(BadParameter) as caught:
        getattr(view, call)(query, NOW)
    assert caught.value.parameter == parameter
    assert message in str(caught.value)
    body = caught.value.body()
    assert body["parameter"] == parameter and body["error"].startswith(f"{parameter}: ")


def test_dimensions_of_the_data_and_of_the_settings_are_known() -> None:
    view = DashboardView.from_settings(
        load_settings({"CCI_EXTRA_DIMENSIONS": "company_size", "CCI_RETAIN_MONTHS": "3"})
    )
    assert view.dimensions() == [
        "all",
        "plan",
        "product",
        "region",
        "company_size",
        "tenure",
        "channel",
    ]
    assert view.parse_dimension("company_size") == "company_size"
    view.apply(TOPIC_UPDATES, *figure(NOV, "legacy", "x", 1, 1))
    assert view.parse_dimension("legacy") == "legacy"


def test_read_params_without_parameters() -> None:
    assert read_params({}, ()) == {}
    with pytest.raises(BadParameter, match="takes no parameters"):
        read_params({"x": ["1"]}, ())
