"""Headcount planning as pure functions: flag grammar, growth projections, exact arithmetic and
the article's Q1–Q4 table."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from streams import domain
from streams.forecast import output, parameters, staffing
from streams.forecast.parameters import Growth
from streams.forecast.trend import fit_trend, period_months

# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("70", Fraction(70)),
        ("1.5", Fraction(3, 2)),
        (" 0.1 ", Fraction(1, 10)),
        (".5", Fraction(1, 2)),
    ],
)
def test_quantities_are_exact_decimals(text: str, value: Fraction) -> None:
    assert parameters.parse_quantity(text, zero_allowed=False) == value


def test_zero_is_a_quantity_only_where_allowed() -> None:
    assert parameters.parse_quantity("0", zero_allowed=True) == 0
    with pytest.raises(ValueError, match="more than zero"):
        parameters.parse_quantity("0", zero_allowed=False)
    with pytest.raises(ValueError, match="more than zero"):
        parameters.parse_quantity("0.0", zero_allowed=False)


@pytest.mark.parametrize("text", ["", "abc", "1,5", "3/2", "1e3", "nan", "inf", "1.5.1", "١"])
def test_anything_but_a_plain_decimal_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="decimal number"):
        parameters.parse_quantity(text, zero_allowed=True)


def test_a_negative_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="zero or more"):
        parameters.parse_quantity("-1.5", zero_allowed=True)


def test_customers_are_whole_non_negative_counts() -> None:
    assert parameters.parse_customers("100,150, 200 ,250") == [100, 150, 200, 250]
    assert parameters.parse_customers("0") == [0]
    with pytest.raises(ValueError, match="negative"):
        parameters.parse_customers("100,-5")
    for text in ("100.5", "100,,200", "", "1e3", "many"):
        with pytest.raises(ValueError, match="whole numbers"):
            parameters.parse_customers(text)
    with pytest.raises(ValueError, match="at most 120"):
        parameters.parse_customers(",".join(["1"] * 121))


def test_labels_are_comma_separated_and_not_empty() -> None:
    assert parameters.parse_labels("Jan, Feb,2026 Q3") == ["Jan", "Feb", "2026 Q3"]
    with pytest.raises(ValueError, match="none empty"):
        parameters.parse_labels("Jan,,Mar")


@pytest.mark.parametrize(
    ("text", "growth"),
    [
        ("50/quarter", Growth(Fraction(50), False, "quarter")),
        ("+50/quarter", Growth(Fraction(50), False, "quarter")),
        ("-20/month", Growth(Fraction(-20), False, "month")),
        ("10%/month", Growth(Fraction(10), True, "month")),
        ("2.5%/year", Growth(Fraction(5, 2), True, "year")),
        (" 10 % / Month ", Growth(Fraction(10), True, "month")),
        ("-100%/year", Growth(Fraction(-100), True, "year")),
    ],
)
def test_growth_grammar(text: str, growth: Growth) -> None:
    assert parameters.parse_growth(text) == growth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("50", "N/UNIT or P%/UNIT"),
        ("50/", "N/UNIT or P%/UNIT"),
        ("fifty/quarter", "N/UNIT or P%/UNIT"),
        ("50/week", "unknown period 'week'"),
        ("50/quarters", "unknown period"),
        ("5.5/month", "whole number of customers"),
        ("-101%/month", "more than 100%"),
    ],
)
def test_bad_growth_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parameters.parse_growth(text)


# --- projections ---------------------------------------------------------------------------------


def test_absolute_growth_adds_the_same_number_every_period() -> None:
    assert parameters.parse_growth("50/quarter").customers(100, 4) == [100, 150, 200, 250]
    assert parameters.parse_growth("-30/month").customers(100, 3) == [100, 70, 40]
    assert parameters.parse_growth("0/year").customers(7, 2) == [7, 7]


def test_percent_growth_compounds_on_the_exact_value_then_rounds_half_up() -> None:
    # 1000 × 1.1^k = 1000, 1100, 1210, 1331, 1464.1, 1610.51: rounded per period, not compounded
    # on the rounded figure.
    assert parameters.parse_growth("10%/month").customers(1000, 6) == [
        1000, 1100, 1210, 1331, 1464, 1611,
    ]  # fmt: skip
    # 10 × 1.05 = 10.5 is a half: up, to 11.
    assert parameters.parse_growth("5%/year").customers(10, 2) == [10, 11]
    assert parameters.parse_growth("-50%/quarter").customers(100, 3) == [100, 50, 25]


def test_a_loss_below_zero_customers_is_refused_naming_the_period() -> None:
    with pytest.raises(ValueError, match="below zero in period 4"):
        parameters.parse_growth("-50/quarter").customers(100, 4)


def test_period_labels_follow_the_unit() -> None:
    assert parameters.period_labels("quarter", 4) == ["Q1", "Q2", "Q3", "Q4"]
    assert parameters.period_labels("month", 2) == ["M1", "M2"]
    assert parameters.period_labels("year", 1) == ["Y1"]


# --- the plan ------------------------------------------------------------------------------------


def article_plan() -> list[staffing.PeriodPlan]:
    labels = parameters.period_labels(parameters.DEFAULT_UNIT, 4)
    return staffing.plan(labels, [100, 150, 200, 250], Fraction("1.5"), Fraction(70))


def test_the_article_table() -> None:
    headers, rows = output.table_cells(article_plan())

    assert headers == ["", "Q1", "Q2", "Q3", "Q4"]
    assert rows == [
        ["customers", "100", "150", "200", "250"],
        ["CCI", "1.5", "1.5", "1.5", "1.5"],
        ["expected tickets / month", "150", "225", "300", "375"],
        ["tickets per agent / month", "70", "70", "70", "70"],
        ["agents needed", "2.14", "3.21", "4.29", "5.36"],
        ["headcount", "3", "4", "5", "6"],
    ]


def test_the_article_as_json_records() -> None:
    records = output.json_records(article_plan())

    assert records[1] == {
        "period": "Q2",
        "customers": 150,
        "cci": 1.5,
        "expected_tickets": 225.0,
        "tickets_per_agent": 70.0,
        "agents_needed": 225 / 70,
        "headcount": 4,
    }
    assert [r["headcount"] for r in records] == [3, 4, 5, 6]


def test_headcount_is_the_ceiling_of_the_exact_workload() -> None:
    # 150 × 1.5 = 225 tickets, 225 / 75 = 3 agents exactly: 3 people, not 4.
    (exact,) = staffing.plan(["Q"], [150], Fraction("1.5"), Fraction(75))
    assert (exact.expected_tickets, exact.agents_needed, exact.headcount) == (225, 3, 3)
    # In floats 3 × 0.1 / 0.1 is 3.0000000000000004; exactly it is 3.
    assert 3 * 0.1 / 0.1 > 3
    (tenths,) = staffing.plan(["Q"], [3], Fraction("0.1"), Fraction("0.1"))
    assert tenths.headcount == 3
    # A measured CCI of 70/3 for 3 customers at 70 tickets per agent: one agent exactly.
    (thirds,) = staffing.plan(["Q"], [3], Fraction(70, 3), Fraction(70))
    assert thirds.headcount == 1
    # Any workload above a whole number needs another person, however small the excess (a float
    # tolerance would round 2.0000000001 down).
    (sliver,) = staffing.plan(["Q"], [20_000_000_001], Fraction(1), Fraction(10**10))
    assert sliver.agents_needed == Fraction(20_000_000_001, 10**10)
    assert sliver.headcount == 3
    (nobody,) = staffing.plan(["Q"], [0], Fraction("1.5"), Fraction(70))
    assert nobody.headcount == 0


def test_plan_uses_the_domain_arithmetic() -> None:
    (period,) = staffing.plan(["Q"], [101], Fraction("1.5"), Fraction("72.5"))

    assert period.expected_tickets == Fraction("151.5")
    assert period.agents_needed == domain.agents_needed(Fraction("151.5"), Fraction("72.5"))
    assert period.headcount == domain.headcount(period.agents_needed) == 3


def test_plan_pairs_labels_with_customers() -> None:
    with pytest.raises(ValueError, match="2 period labels for 3 periods"):
        staffing.plan(["a", "b"], [1, 2, 3], Fraction(1), Fraction(1))


@pytest.mark.parametrize(
    ("value", "places", "trim", "text"),
    [
        (Fraction(15, 7), 2, False, "2.14"),
        (Fraction(75, 14), 2, False, "5.36"),
        (Fraction(3), 2, False, "3.00"),
        (Fraction(3), 2, True, "3"),
        (Fraction("151.5"), 2, True, "151.5"),
        (Fraction("2.145"), 2, False, "2.15"),  # a float would print 2.14 (2.145 is 2.1449…)
        (Fraction("2.125"), 2, False, "2.13"),  # half up, not to even
        (Fraction("-2.125"), 2, False, "-2.13"),
        (Fraction("0.004"), 2, False, "0.00"),
        (Fraction(1, 3), 4, True, "0.3333"),
        (Fraction("2.5"), 0, False, "3"),
    ],
)
def test_decimal_text_rounds_the_exact_value_half_up(
    value: Fraction, places: int, trim: bool, text: str
) -> None:
    assert output.decimal_text(value, places, trim=trim) == text


# --- what-if: the plan at a target CCI -----------------------------------------------------------


def test_what_if_adds_the_headcount_at_the_target_and_the_agents_not_needed() -> None:
    what_if = staffing.WhatIf(Fraction("1.2"), minutes_per_ticket=Fraction(12))
    plans = staffing.plan(
        ["Q1", "Q2", "Q3", "Q4"], [100, 150, 200, 250], Fraction("1.5"), Fraction(70), what_if
    )

    at_target = [p.at_target for p in plans]
    assert all(t is not None for t in at_target)
    # 100 × 1.2 = 120 tickets, 120/70 = 1.71 agents: 2 people instead of 3.
    assert [(t.expected_tickets, t.headcount, t.agents_not_needed) for t in at_target] == [
        (120, 2, 1), (180, 3, 1), (240, 4, 1), (300, 5, 1),
    ]  # fmt: skip
    # 30 tickets fewer × 12 minutes = 6 hours a month, exactly.
    assert [t.hours_saved for t in at_target] == [6, 9, 12, 15]
    records = output.json_records(plans)
    assert records[0] == {
        "period": "Q1",
        "customers": 100,
        "cci": 1.5,
        "expected_tickets": 150.0,
        "tickets_per_agent": 70.0,
        "agents_needed": 150 / 70,
        "headcount": 3,
        "target_cci": 1.2,
        "agents_needed_at_target": 120 / 70,
        "headcount_at_target": 2,
        "agents_not_needed": 1,
        "support_hours_saved": 6.0,
    }
    _, rows = output.table_cells(plans)
    assert rows[6:] == [
        ["target CCI", "1.2", "1.2", "1.2", "1.2"],
        ["headcount at target CCI", "2", "3", "4", "5"],
        ["agents not needed", "1", "1", "1", "1"],
        ["support hours saved / month", "6", "9", "12", "15"],
    ]


def test_what_if_is_exact_and_may_need_more_agents() -> None:
    # 3 × 0.1 = 0.3 tickets at 0.1 per agent: exactly 3 agents (floats would say 4).
    (same,) = staffing.plan(
        ["Q"], [3], Fraction("0.2"), Fraction("0.1"), staffing.WhatIf(Fraction("0.1"))
    )
    assert same.at_target is not None and same.at_target.headcount == 3
    assert same.at_target.hours_saved is None  # no minutes per ticket: no hours
    (more,) = staffing.plan(["Q"], [100], Fraction(1), Fraction(70), staffing.WhatIf(Fraction(2)))
    assert more.at_target is not None
    assert (more.headcount, more.at_target.headcount, more.at_target.agents_not_needed) == (
        2,
        3,
        -1,
    )
    _, rows = output.table_cells([same])
    assert [row[0] for row in rows][-1] == "agents not needed"  # no hours row


# --- trend ---------------------------------------------------------------------------------------


def test_trend_is_the_exact_least_squares_line() -> None:
    # CCI 1.0, 1.2, 1.1, 1.5 in months 0..3: slope = Σ(x−x̄)(y−ȳ)/Σ(x−x̄)² = 0.7/5 = 0.14.
    points = [
        (0, Fraction("1.0")),
        (1, Fraction("1.2")),
        (2, Fraction("1.1")),
        (3, Fraction("1.5")),
    ]
    trend = fit_trend(points)

    assert trend.slope == Fraction("0.14")
    assert (trend.first, trend.last, trend.points) == (0, 3, 4)
    assert trend.level == Fraction("1.41")  # ȳ 1.2 + 0.14 × (3 − 1.5)
    assert trend.at(4) == Fraction("1.55")
    assert trend.at(6) == Fraction("1.83")
    # Points on a line come back as that line, in any order and with gaps between months.
    exact = fit_trend([(10, Fraction(3)), (4, Fraction(1)), (7, Fraction(2))])
    assert (exact.slope, exact.level, exact.at(13)) == (Fraction(1, 3), 3, 4)


def test_a_falling_trend_stops_at_zero_and_two_months_are_needed() -> None:
    falling = fit_trend([(0, Fraction(1)), (1, Fraction("0.5"))])
    assert falling.at(2) == 0 and falling.at(5) == 0
    with pytest.raises(ValueError, match="at least 2 months"):
        fit_trend([(5, Fraction(1))])
    with pytest.raises(ValueError, match="at least 2 months"):
        fit_trend([(5, Fraction(1)), (5, Fraction(2))])


def test_period_months_step_by_the_period_length() -> None:
    assert period_months(100, "quarter", 4) == [100, 103, 106, 109]
    assert period_months(100, "month", 3) == [100, 101, 102]
    assert period_months(100, "year", 2) == [100, 112]


def test_a_trend_plan_has_one_cci_per_period() -> None:
    plans = staffing.plan(["Q1", "Q2"], [100, 100], [Fraction(1), Fraction(2)], Fraction(70))
    assert [(p.cci, p.headcount) for p in plans] == [(1, 2), (2, 3)]
    with pytest.raises(ValueError, match="1 CCI values for 2 periods"):
        staffing.plan(["Q1", "Q2"], [100, 100], [Fraction(1)], Fraction(70))


# --- a request: the same parameters for the CLI and the API --------------------------------------


def test_the_articles_request() -> None:
    request = parameters.parse_request(
        {"customers": "100,150,200,250", "cci": "1.5", "tickets_per_agent": "70"}
    )

    assert request.labels == ["Q1", "Q2", "Q3", "Q4"]
    assert request.customers == [100, 150, 200, 250]
    assert (request.cci, request.tickets_per_agent) == (Fraction("1.5"), 70)
    assert (request.dimension, request.segment, request.month) == ("all", "all", None)
    assert request.what_if is None and request.trend_months is None


def test_a_request_with_growth_what_if_and_trend() -> None:
    request = parameters.parse_request(
        {
            "customers": "100",
            "growth": "10%/month",
            "periods": "3",
            "tickets_per_agent": "70",
            "dimension": "plan",
            "segment": "free",
            "month": "2026-09",
            "trend_months": "6",
            "target_cci": "0.8",
            "minutes_per_ticket": "15",
        }
    )

    assert (request.labels, request.customers, request.unit) == (
        ["M1", "M2", "M3"], [100, 110, 121], "month"
    )  # fmt: skip
    assert (request.dimension, request.segment, request.month) == ("plan", "free", "2026-09")
    assert request.trend_months == 6
    assert request.what_if == staffing.WhatIf(Fraction("0.8"), Fraction(15))


BASE = {"customers": "1", "tickets_per_agent": "7"}


@pytest.mark.parametrize(
    ("values", "parameter", "says"),
    [
        ({"tickets_per_agent": "70"}, "customers", "required"),
        ({"customers": "1"}, "tickets_per_agent", "required"),
        ({**BASE, "customers": "x"}, "customers", "whole numbers"),
        ({**BASE, "tickets_per_agent": "0"}, "tickets_per_agent", "more than zero"),
        ({**BASE, "periods": "2"}, "periods", "2 periods"),
        ({**BASE, "growth": "1/q"}, "growth", "unknown period"),
        ({**BASE, "growth": "1/month", "periods": "0"}, "periods", "from 1 to 120"),
        ({**BASE, "labels": "a,b"}, "labels", "2 labels"),
        ({**BASE, "cci": "-1"}, "cci", "zero or more"),
        ({**BASE, "cci": "1", "month": "2026-01"}, "month", "leave them out"),
        ({**BASE, "cci": "1", "trend_months": "3"}, "trend_months", "leave them out"),
        ({**BASE, "dimension": "plan"}, "segment", "go together"),
        ({**BASE, "segment": "free"}, "dimension", "go together"),
        ({**BASE, "month": "2026-13"}, "month", "out of range"),
        ({**BASE, "trend_months": "1"}, "trend_months", "from 2"),
        ({**BASE, "trend_months": "two"}, "trend_months", "whole number"),
        ({**BASE, "target_cci": "lower"}, "target_cci", "decimal"),
        ({**BASE, "minutes_per_ticket": "5"}, "minutes_per_ticket", "target_cci"),
        ({**BASE, "target_cci": "1", "minutes_per_ticket": "0"}, "minutes_per_ticket", "more than"),
    ],
)
def test_a_bad_request_names_its_parameter(
    values: dict[str, str], parameter: str, says: str
) -> None:
    with pytest.raises(parameters.ParameterError, match=says) as raised:
        parameters.parse_request(values)

    assert raised.value.parameter == parameter


def test_messages_spell_parameters_as_the_caller_names_them() -> None:
    with pytest.raises(parameters.ParameterError, match="--dimension and --segment go together"):
        parameters.parse_request(
            {"customers": "1", "tickets_per_agent": "7", "dimension": "plan"},
            name=lambda p: "--" + p.replace("_", "-"),
        )


def test_numbers_are_refused_before_they_cost_time() -> None:
    """A request is answered on the worker: a decimal of thousands of digits, compounded over
    120 periods, took 36 s of exact arithmetic. Inputs are refused by length first."""
    digits = "1." + "3" * 3000
    for parameter, text in (
        ("cci", digits),
        ("tickets_per_agent", digits),
        ("target_cci", digits),
        ("growth", digits + "%/month"),
        ("customers", "1" * 3000),
    ):
        values = {**BASE, "cci": "1", parameter: text}
        with pytest.raises(parameters.ParameterError, match="too long") as raised:
            parameters.parse_request(values)
        assert raised.value.parameter == parameter
    # Growth that compounds past any real customer base is refused, naming it.
    with pytest.raises(parameters.ParameterError, match="above 1,000,000,000,000,000") as raised:
        parameters.parse_request({**BASE, "growth": "999%/month", "periods": "120"})
    assert raised.value.parameter == "growth"
    # The longest accepted still plans at once.
    longest = "9" * 12 + "." + "9" * 7
    start = time.monotonic()
    request = parameters.parse_request(
        {"customers": "9" * 12, "growth": "0.012345678901234567%/month", "periods": "120",
         "tickets_per_agent": longest, "cci": longest, "target_cci": longest,
         "minutes_per_ticket": longest}
    )  # fmt: skip
    output.json_text(
        staffing.plan(
            request.labels, request.customers, request.cci, request.tickets_per_agent,
            request.what_if,
        )
    )  # fmt: skip
    assert time.monotonic() - start < 1.0
