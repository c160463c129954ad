"""Alert rules: the rules file, when a figure breaks a rule, and which records a change emits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.pipeline.alerts import (
    ABOVE,
    BELOW,
    CLEARED,
    FIRING,
    AlertBook,
    AlertRules,
    Figure,
    Published,
    Rule,
    RulesError,
    check_dimensions,
    load_rules,
    transitions,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "alert-rules.example.toml"
NOW = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


# --- the rules file ------------------------------------------------------------------------------


def test_the_shipped_example_loads() -> None:
    rules = load_rules(EXAMPLE)

    assert rules.path == EXAMPLE and str(rules) == str(EXAMPLE)
    assert [rule.name for rule in rules.rules] == [
        "free-plan-needs-help",
        "region-out-of-range",
        "phone-silent",
    ]
    assert rules.rules[1] == Rule("region-out-of-range", "region", "*", 0.4, 0.02, 100)
    check_dimensions(rules, ())


def test_a_minimal_rule_has_defaults_and_float_thresholds(tmp_path: Path) -> None:
    path = write(tmp_path, '[[rule]]\nname = "r"\ndimension = "all"\nsegment = "all"\nabove = 1\n')

    (rule,) = load_rules(path).rules

    assert rule == Rule("r", "all", "all", above=1.0, below=None, min_active_users=0)
    assert isinstance(rule.above, float)


def test_unset_means_no_rules() -> None:
    assert AlertRules().rules == () and str(AlertRules()) == ""


GOOD = 'name = "r"\ndimension = "plan"\nsegment = "free"\n'

# (file text, parts the message must contain besides the file name)
INVALID: list[tuple[str, tuple[str, ...]]] = [
    ("", ("no rules",)),
    ("[rule]\n" + GOOD + "above = 1\n", ("no rules", "[[rule]]")),
    ("rules = []\n", ("unknown top-level key 'rules'",)),
    ("[[rule]]\nname = ", ("not valid TOML",)),
    ("[[rule]]\n" + GOOD + "abov = 1\n", ("rule 1 ('r')", "unknown field 'abov'")),
    ("[[rule]]\n" + GOOD, ("rule 1 ('r')", "'above', 'below' or both")),
    ('[[rule]]\nname = "r"\nsegment = "free"\nabove = 1\n', ("rule 1 ('r')", "'dimension'")),
    ('[[rule]]\ndimension = "plan"\nsegment = "x"\nabove = 1\n', ("rule 1:", "'name' is missing")),
    ("[[rule]]\n" + GOOD + 'above = "high"\n', ("rule 1 ('r')", "'above'", "'high'")),
    ("[[rule]]\n" + GOOD + "above = true\n", ("'above'", "expected a number")),
    ("[[rule]]\n" + GOOD + "below = -0.1\n", ("'below'", "≥ 0")),
    ("[[rule]]\n" + GOOD + "above = nan\n", ("'above'", "nan")),
    ("[[rule]]\n" + GOOD + "above = 0.5\nbelow = 0.5\n", ("'below' (0.5)", "less than 'above'")),
    ("[[rule]]\n" + GOOD + "above = 1\nmin_active_users = 1.5\n", ("'min_active_users'", "1.5")),
    ("[[rule]]\n" + GOOD + "above = 1\nmin_active_users = -1\n", ("'min_active_users'", "-1")),
    ("[[rule]]\n" + GOOD + "above = 1\nmin_active_users = true\n", ("'min_active_users'",)),
    ('[[rule]]\nname = "a|b"\ndimension = "plan"\nsegment = "x"\nabove = 1\n', ("'name'", "a|b")),
    ('[[rule]]\nname = 7\ndimension = "plan"\nsegment = "x"\nabove = 1\n', ("'name'", "7")),
    ('[[rule]]\nname = "r"\ndimension = "plan"\nsegment = ""\nabove = 1\n', ("'segment'",)),
    ('[[rule]]\nname = "r"\ndimension = "all"\nsegment = "free"\nabove = 1\n', ("'segment'",)),
    ('[[rule]]\nname = "r"\ndimension = "tenure"\nsegment = "old"\nabove = 1\n', ("12m+",)),
    (
        "[[rule]]\n" + GOOD + "above = 1\n[[rule]]\n" + GOOD + "below = 1\n",
        ("rule 2 ('r')", "'name'", "already the name of rule 1"),
    ),
    ("rule = [1]\n", ("rule 1", "expected a [[rule]] table")),
]


@pytest.mark.parametrize(("text", "named"), INVALID)
def test_an_invalid_file_names_the_file_rule_and_field(
    tmp_path: Path, text: str, named: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(RulesError) as raised:
        load_rules(path)

    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    for part in named:
        assert part in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"nope\.toml: cannot read"):
        load_rules(tmp_path / "nope.toml")


def test_a_dimension_the_worker_does_not_publish_is_refused(tmp_path: Path) -> None:
    rules = load_rules(
        write(tmp_path, '[[rule]]\nname = "r"\ndimension = "plans"\nsegment = "x"\nabove = 1\n')
    )

    with pytest.raises(RulesError, match=r"rule 1 \('r'\): field 'dimension': 'plans'"):
        check_dimensions(rules, ())
    check_dimensions(rules, ("plans",))  # an extra dimension of that name makes it valid


@pytest.mark.parametrize("dimension", ["all", "plan", "product", "region", "tenure", "channel"])
def test_every_published_dimension_is_accepted(tmp_path: Path, dimension: str) -> None:
    text = f'[[rule]]\nname = "r"\ndimension = "{dimension}"\nsegment = "*"\nabove = 1\n'

    check_dimensions(load_rules(write(tmp_path, text)), ())


# --- when a figure breaks a rule -----------------------------------------------------------------


def figure(
    tickets: int, active_users: int, segment: str = "free", month: str = "2026-03"
) -> Figure:
    cci = tickets / active_users if active_users else None
    return Figure(month, "plan", segment, tickets, active_users, cci)


BOTH = Rule("band", "plan", "free", above=0.5, below=0.1, min_active_users=10)


@pytest.mark.parametrize(
    ("tickets", "active_users", "expected"),
    [
        (6, 10, ABOVE),
        (5, 10, None),  # exactly on the threshold is not above it
        (3, 10, None),
        (1, 10, None),  # nor below it
        (0, 10, BELOW),
        (9, 9, None),  # fewer active users than the rule's minimum: not judged
        (0, 9, None),
        (3, 0, None),  # no CCI: not judged
    ],
)
def test_condition(tickets: int, active_users: int, expected: str | None) -> None:
    assert BOTH.condition(figure(tickets, active_users)) == expected


def test_a_wildcard_matches_every_segment_of_its_dimension_only() -> None:
    rule = Rule("any-plan", "plan", "*", above=1)

    assert rule.matches("plan", "free") and rule.matches("plan", "paid")
    assert not rule.matches("region", "free")
    assert not Rule("free", "plan", "free", above=1).matches("plan", "paid")


# --- transitions ---------------------------------------------------------------------------------


def published(state: str, condition: str) -> Published:
    return Published(state, condition, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("previous", "desired", "expected"),
    [
        (None, None, []),
        (None, ABOVE, [(FIRING, ABOVE)]),
        (None, BELOW, [(FIRING, BELOW)]),
        (published(FIRING, ABOVE), ABOVE, []),
        (published(FIRING, ABOVE), None, [(CLEARED, ABOVE)]),
        (published(FIRING, BELOW), None, [(CLEARED, BELOW)]),
        (published(CLEARED, ABOVE), None, []),
        (published(CLEARED, ABOVE), ABOVE, [(FIRING, ABOVE)]),
        (published(CLEARED, ABOVE), BELOW, [(FIRING, BELOW)]),
        (published(FIRING, ABOVE), BELOW, [(CLEARED, ABOVE), (FIRING, BELOW)]),
        (published(FIRING, BELOW), ABOVE, [(CLEARED, BELOW), (FIRING, ABOVE)]),
    ],
)
def test_transitions(previous: Published | None, desired: str | None, expected: list[Any]) -> None:
    assert transitions(previous, desired) == expected  # type: ignore[arg-type]


# --- the book ------------------------------------------------------------------------------------


def book(*rules: Rule) -> AlertBook:
    return AlertBook(AlertRules(Path("rules.toml"), rules))


def states(records: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, str]]:
    return [(key, value["state"], value["condition"]) for key, value in records]


def test_crossing_fires_once_holds_silently_and_clears_once() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5))
    key = "busy|2026-03|plan|free"

    assert alerts.evaluate(figure(2, 10), NOW) == []
    fired = alerts.evaluate(figure(6, 10), NOW)
    assert states(fired) == [(key, FIRING, ABOVE)]
    assert alerts.evaluate(figure(7, 10), NOW) == []
    assert alerts.evaluate(figure(9, 10), NOW) == []
    cleared = alerts.evaluate(figure(9, 20), NOW)
    assert states(cleared) == [(key, CLEARED, ABOVE)]
    assert alerts.evaluate(figure(9, 21), NOW) == []
    assert states(alerts.evaluate(figure(20, 21), NOW)) == [(key, FIRING, ABOVE)]


def test_record_values() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5, min_active_users=4))

    ((key, value),) = alerts.evaluate(figure(3, 4), NOW)

    assert key == "busy|2026-03|plan|free"
    assert value == {
        "rule": "busy",
        "month": "2026-03",
        "dimension": "plan",
        "segment": "free",
        "state": "firing",
        "condition": "above",
        "threshold": 0.5,
        "cci": 0.75,
        "tickets": 3,
        "active_users": 4,
        "min_active_users": 4,
        "version": 1_773_576_000_000_000,
        "at": "2026-03-15T12:00:00.000Z",
    }


def test_records_match_the_schema() -> None:
    import jsonschema

    schema = json.loads((REPO / "schemas" / "cci-alerts.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    alerts = book(BOTH)
    records = [
        *alerts.evaluate(figure(6, 10), NOW),  # firing above
        *alerts.evaluate(figure(0, 10), NOW),  # cleared above, firing below
        *alerts.evaluate(figure(0, 0), NOW),  # cleared below, cci null
    ]

    assert [value["state"] for _, value in records] == [FIRING, CLEARED, FIRING, CLEARED]
    assert records[-1][1]["cci"] is None
    for _, value in records:
        validator.validate(value)


def test_switching_condition_clears_the_old_one_first() -> None:
    alerts = book(BOTH)
    alerts.evaluate(figure(6, 10), NOW)

    switched = alerts.evaluate(figure(0, 10), NOW)

    assert [(v["state"], v["condition"], v["threshold"]) for _, v in switched] == [
        (CLEARED, ABOVE, 0.5),
        (FIRING, BELOW, 0.1),
    ]
    assert switched[0][1]["version"] < switched[1][1]["version"]


def test_too_few_active_users_never_fires_and_clears_a_firing_alert() -> None:
    alerts = book(BOTH)

    assert alerts.evaluate(figure(9, 9), NOW) == []  # CCI 1.0, but only 9 of 10 users
    assert states(alerts.evaluate(figure(9, 10), NOW))[0][1:] == (FIRING, ABOVE)
    # Users moved to another segment: below the minimum the segment is not judged, i.e. ok.
    assert states(alerts.evaluate(figure(9, 9), NOW))[0][1:] == (CLEARED, ABOVE)


def test_a_null_cci_is_ok() -> None:
    alerts = book(Rule("quiet", "plan", "free", below=0.1))

    assert alerts.evaluate(figure(4, 0), NOW) == []
    assert states(alerts.evaluate(figure(0, 5), NOW))[0][1:] == (FIRING, BELOW)
    cleared = alerts.evaluate(figure(4, 0), NOW)
    assert states(cleared)[0][1:] == (CLEARED, BELOW) and cleared[0][1]["cci"] is None


def test_a_wildcard_rule_keeps_one_alert_per_segment_and_month() -> None:
    alerts = book(Rule("busy", "plan", "*", above=0.5))

    records = [
        *alerts.evaluate(figure(6, 10, "free"), NOW),
        *alerts.evaluate(figure(6, 10, "paid"), NOW),
        *alerts.evaluate(figure(6, 10, "free", month="2026-04"), NOW),
        *alerts.evaluate(figure(7, 10, "free"), NOW),  # still firing: nothing
    ]

    assert states(records) == [
        ("busy|2026-03|plan|free", FIRING, ABOVE),
        ("busy|2026-03|plan|paid", FIRING, ABOVE),
        ("busy|2026-04|plan|free", FIRING, ABOVE),
    ]
    assert alerts.evaluate(Figure("2026-03", "region", "free", 6, 10, 0.6), NOW) == []


def test_each_rule_on_a_figure_is_its_own_alert() -> None:
    alerts = book(Rule("busy", "plan", "*", above=0.5), Rule("very-busy", "plan", "free", above=1))

    assert [key for key, _ in alerts.evaluate(figure(20, 10), NOW)] == [
        "busy|2026-03|plan|free",
        "very-busy|2026-03|plan|free",
    ]
    assert [key for key, _ in alerts.evaluate(figure(8, 10), NOW)] == [
        "very-busy|2026-03|plan|free"
    ]


def test_versions_rise_per_key_even_when_the_clock_stands_still() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5))

    versions = [
        value["version"]
        for tickets in (6, 1, 6, 1)
        for _, value in alerts.evaluate(figure(tickets, 10), NOW)
    ]

    assert versions == sorted(set(versions)) and len(versions) == 4


# --- reading published states back ---------------------------------------------------------------


def encoded(records: list[tuple[str, dict[str, Any]]]) -> list[tuple[bytes, bytes]]:
    return [(key.encode(), orjson.dumps(value)) for key, value in records]


def test_a_restarted_book_repeats_nothing_already_published() -> None:
    rule = Rule("busy", "plan", "*", above=0.5)
    before = book(rule)
    topic = encoded(
        [
            *before.evaluate(figure(6, 10, "free"), NOW),
            *before.evaluate(figure(6, 10, "paid"), NOW),
            *before.evaluate(figure(6, 20, "paid"), NOW),  # paid cleared
        ]
    )

    after = book(rule)
    for key, value in topic:
        after.apply(key, value)

    later = NOW - timedelta(hours=1)  # a clock behind the last version still gives newer ones
    assert after.evaluate(figure(6, 10, "free"), later) == []
    assert after.evaluate(figure(6, 20, "paid"), later) == []
    ((_, cleared),) = after.evaluate(figure(1, 10, "free"), later)
    assert cleared["state"] == CLEARED
    assert cleared["version"] > orjson.loads(topic[0][1])["version"]


def test_reading_back_an_older_record_does_not_roll_the_state_back() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5))
    fired = encoded(alerts.evaluate(figure(6, 10), NOW))
    cleared = encoded(alerts.evaluate(figure(1, 10), NOW))

    # The worker's follower reads its own records after it has moved on.
    for key, value in [*fired, *cleared]:
        alerts.apply(key, value)
        assert alerts.evaluate(figure(1, 10), NOW) == []


def test_a_newer_record_from_another_worker_wins() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5))
    ((key, fired),) = alerts.evaluate(figure(6, 10), NOW)
    # After a rebalance the month's new owner cleared the alert.
    theirs = {**fired, "state": CLEARED, "version": fired["version"] + 1_000_000}

    alerts.apply(key.encode(), orjson.dumps(theirs))

    assert states(alerts.evaluate(figure(6, 10), NOW)) == [(key, FIRING, ABOVE)]


def test_a_tombstone_forgets_and_junk_is_ignored() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5))
    ((key, _),) = alerts.evaluate(figure(6, 10), NOW)

    alerts.apply(key.encode(), b"not json")
    alerts.apply(key.encode(), orjson.dumps({"state": "firing"}))
    alerts.apply(None, b"{}")
    assert alerts.evaluate(figure(6, 10), NOW) == []

    alerts.apply(key.encode(), None)
    assert states(alerts.evaluate(figure(6, 10), NOW))[0][1:] == (FIRING, ABOVE)


def test_forgetting_a_month_drops_its_states_and_versions_only() -> None:
    alerts = book(Rule("busy", "plan", "free", above=0.5))
    alerts.evaluate(figure(6, 10, month="2026-01"), NOW)
    alerts.evaluate(figure(6, 10, month="2026-03"), NOW)

    alerts.forget_months_before("2026-02")

    assert list(alerts.published) == ["busy|2026-03|plan|free"]
    assert list(alerts.versions.last) == ["busy|2026-03|plan|free"]
    # The kept month still remembers it fired: the same figure publishes nothing.
    assert alerts.evaluate(figure(7, 10, month="2026-03"), NOW) == []
