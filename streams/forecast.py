"""Headcount planning (``cci forecast``): customers per period × CCI → tickets → agents.

The question of the first article, "if we add customers, how many agents do we need?". CCI counts
contacts per customer per month and an agent handles so many tickets per month, so every row of a
plan is a monthly workload at that period's number of customers:

    expected tickets = customers × CCI
    agents needed    = expected tickets / tickets per agent      (domain.agents_needed)
    headcount        = agents needed rounded up                  (domain.headcount)

Every quantity is an exact ``Fraction`` (flags are parsed from their decimal text, a measured CCI is
tickets / active users), so 150 × 1.5 / 75 is exactly 3 people, never 3.0000000001 → 4. Floats
appear only in the JSON output. A what-if (``WhatIf``) plans each period again at a target CCI; a
trend (``fit_trend``) gives each period its own CCI from a least-squares line (docs/forecast.md).
Pure: no click, no store, no web; ``parse_request`` reads the parameters of both ``cci forecast``
and ``GET /api/forecast``, and ``streams/store/query.py`` fetches the measured figures.

Growth grammar (``--growth``), one period per UNIT, the first period being ``--customers``:

    N/UNIT      N more customers every period (N a whole number, ``-N`` for a loss)
    P%/UNIT     P percent more every period, compounded (P a decimal, ``-P%`` for a loss);
                each period's customers are the exact compounded value rounded half up
    UNIT        month | quarter | year; it also names the periods: M1…, Q1…, Y1…
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import TypeVar

import orjson

from streams import domain

T = TypeVar("T")

PERIOD_PREFIXES = {"month": "M", "quarter": "Q", "year": "Y"}
DEFAULT_UNIT = "quarter"  # the article plans by quarter
DEFAULT_PERIODS = 4  # with --growth and neither --periods nor --labels
MAX_PERIODS = 120
# Longest number accepted, in characters: the API plans on the worker, and exact arithmetic on a
# decimal of thousands of digits compounded over 120 periods took 36 s. 20 characters hold any
# real plan (a trillion customers, a CCI to 7 decimals).
MAX_NUMBER_CHARS = 20
MAX_CUSTOMERS = 10**15  # a projection beyond is a typo, and beyond what a float shows exactly

_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_WHOLE = re.compile(r"[+-]?[0-9]+")
_GROWTH = re.compile(
    r"(?P<amount>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))(?P<percent>%?)/(?P<unit>[a-z]+)"
)


# --- parsing flags (ValueError says what is wrong; the CLI names the flag) -----------------------


def parse_quantity(text: str, *, zero_allowed: bool) -> Fraction:
    """A plain decimal (``70``, ``1.5``) as an exact Fraction; negative is an error, and so is
    zero unless ``zero_allowed``."""
    cleaned = _short(text.strip())
    if not _DECIMAL.fullmatch(cleaned):
        raise ValueError(f"expected a decimal number such as 1.5, got {text!r}")
    value = Fraction(cleaned)
    if value < 0 or (value == 0 and not zero_allowed):
        raise ValueError(f"must be {'zero or more' if zero_allowed else 'more than zero'}: {text}")
    return value


def _short(number: str) -> str:
    """``number`` unless it is longer than MAX_NUMBER_CHARS (then ValueError)."""
    if len(number) > MAX_NUMBER_CHARS:
        raise ValueError(
            f"number too long: {len(number)} characters, at most {MAX_NUMBER_CHARS} "
            f"({number[:12]}…)"
        )
    return number


def parse_customers(text: str) -> list[int]:
    """``100,150,200``: one whole, non-negative number of customers per period."""
    counts: list[int] = []
    for part in text.split(","):
        item = _short(part.strip())
        if not _WHOLE.fullmatch(item):
            raise ValueError(f"expected whole numbers separated by commas, got {item!r}")
        count = int(item)
        if count < 0:
            raise ValueError(f"a number of customers cannot be negative: {count}")
        counts.append(count)
    if len(counts) > MAX_PERIODS:
        raise ValueError(f"at most {MAX_PERIODS} periods, got {len(counts)}")
    return counts


def parse_labels(text: str) -> list[str]:
    """``Jan,Feb,Mar``: one label per period, none empty."""
    labels = [part.strip() for part in text.split(",")]
    if not all(labels):
        raise ValueError(f"expected labels separated by commas, none empty, got {text!r}")
    if len(labels) > MAX_PERIODS:
        raise ValueError(f"at most {MAX_PERIODS} periods, got {len(labels)}")
    return labels


@dataclass(frozen=True)
class Growth:
    """Customers gained per period: ``amount`` customers, or ``amount`` percent compounded."""

    amount: Fraction
    percent: bool
    unit: str

    def customers(self, start: int, periods: int) -> list[int]:
        """Customers in each of ``periods`` periods, the first being ``start``."""
        if self.percent:
            factor = 1 + self.amount / 100
            counts = [round_half_up(start * factor**k) for k in range(periods)]
        else:
            counts = [start + int(self.amount) * k for k in range(periods)]
        for k, count in enumerate(counts):
            if count < 0:
                raise ValueError(f"{self} takes {start} customers below zero in period {k + 1}")
            if count > MAX_CUSTOMERS:
                raise ValueError(
                    f"{self} takes {start} customers above {MAX_CUSTOMERS:,} in period {k + 1}"
                )
        return counts

    def __str__(self) -> str:
        return f"{decimal_text(self.amount, 4, trim=True)}{'%' if self.percent else ''}/{self.unit}"


def parse_growth(text: str) -> Growth:
    """``50/quarter``, ``10%/month``, ``-2.5%/year`` (see the module's grammar)."""
    match = _GROWTH.fullmatch(text.strip().lower().replace(" ", ""))
    if match:
        _short(match["amount"])
    if not match:
        raise ValueError(
            f"expected N/UNIT or P%/UNIT such as 50/quarter or 10%/month, got {text!r}"
        )
    unit = match["unit"]
    if unit not in PERIOD_PREFIXES:
        raise ValueError(f"unknown period {unit!r} in {text!r}; use month, quarter or year")
    amount = Fraction(match["amount"])
    percent = bool(match["percent"])
    if not percent and amount.denominator != 1:
        raise ValueError(
            f"N/UNIT takes a whole number of customers, got {text!r} (P%/UNIT is a rate)"
        )
    if percent and amount < -100:
        raise ValueError(f"cannot lose more than 100% of the customers: {text!r}")
    return Growth(amount, percent, unit)


def period_labels(unit: str, count: int) -> list[str]:
    """``Q1, Q2, …`` (``M…`` for months, ``Y…`` for years), counted from the first period."""
    return [f"{PERIOD_PREFIXES[unit]}{k}" for k in range(1, count + 1)]


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIf:
    """``--target-cci``: the same plan at a lower (or any) CCI; with ``--minutes-per-ticket`` the
    support time the difference in tickets is worth."""

    target_cci: Fraction
    minutes_per_ticket: Fraction | None = None


@dataclass(frozen=True)
class AtTarget:
    """One period's workload at the target CCI, and what it saves against the plan."""

    cci: Fraction
    expected_tickets: Fraction
    agents_needed: Fraction
    headcount: int
    agents_not_needed: int  # plan headcount − headcount at target (negative: more are needed)
    hours_saved: Fraction | None  # support hours a month; None without minutes per ticket


@dataclass(frozen=True)
class PeriodPlan:
    """One period's monthly workload and the agents it needs, exactly."""

    period: str
    customers: int
    cci: Fraction
    expected_tickets: Fraction
    tickets_per_agent: Fraction
    agents_needed: Fraction
    headcount: int
    at_target: AtTarget | None = None


def plan(
    labels: Sequence[str],
    customers: Sequence[int],
    cci: Fraction | Sequence[Fraction],
    tickets_per_agent: Fraction,
    what_if: WhatIf | None = None,
) -> list[PeriodPlan]:
    """A plan per period; ``labels``, ``customers`` and (when a sequence, e.g. a trend) ``cci``
    pair up one to one."""
    if len(labels) != len(customers):
        raise ValueError(f"{len(labels)} period labels for {len(customers)} periods")
    ccis = [cci] * len(customers) if isinstance(cci, Fraction) else list(cci)
    if len(ccis) != len(customers):
        raise ValueError(f"{len(ccis)} CCI values for {len(customers)} periods")
    plans = []
    for label, count, ratio in zip(labels, customers, ccis, strict=True):
        expected = count * ratio
        agents = domain.agents_needed(expected, tickets_per_agent)
        people = domain.headcount(agents)
        plans.append(
            PeriodPlan(
                period=label,
                customers=count,
                cci=ratio,
                expected_tickets=expected,
                tickets_per_agent=tickets_per_agent,
                agents_needed=agents,
                headcount=people,
                at_target=None
                if what_if is None
                else _at_target(count, expected, people, tickets_per_agent, what_if),
            )
        )
    return plans


def _at_target(
    customers: int,
    expected: Fraction,
    headcount: int,
    tickets_per_agent: Fraction,
    what_if: WhatIf,
) -> AtTarget:
    tickets = customers * what_if.target_cci
    agents = domain.agents_needed(tickets, tickets_per_agent)
    people = domain.headcount(agents)
    minutes = what_if.minutes_per_ticket
    return AtTarget(
        cci=what_if.target_cci,
        expected_tickets=tickets,
        agents_needed=agents,
        headcount=people,
        agents_not_needed=headcount - people,
        hours_saved=None if minutes is None else (expected - tickets) * minutes / 60,
    )


# --- trend ---------------------------------------------------------------------------------------

MONTHS_PER_UNIT = {"month": 1, "quarter": 3, "year": 12}
MAX_TREND_MONTHS = 120


@dataclass(frozen=True)
class Trend:
    """A least-squares line through a segment's monthly CCI: ``cci(month) = level + slope ×
    (month − last)``, exact, where ``last`` is the newest month fitted."""

    first: int  # month index of the oldest point
    last: int  # month index of the newest point
    points: int
    level: Fraction  # the line's value at ``last``
    slope: Fraction  # CCI change per month

    def at(self, month: int) -> Fraction:
        """The projected CCI in ``month``; never below zero (a falling line stops at none)."""
        return max(Fraction(0), self.level + self.slope * (month - self.last))


def fit_trend(points: Sequence[tuple[int, Fraction]]) -> Trend:
    """Ordinary least squares of CCI on month index, in exact arithmetic: slope =
    Σ(x−x̄)(y−ȳ) / Σ(x−x̄)², through (x̄, ȳ). Needs two or more distinct months."""
    months = {x for x, _ in points}
    if len(months) < 2:
        raise ValueError(f"a trend needs at least 2 months with a CCI, got {len(months)}")
    n = len(points)
    mean_x = Fraction(sum(x for x, _ in points), n)
    mean_y = sum((y for _, y in points), Fraction(0)) / n
    spread = sum(((x - mean_x) ** 2 for x, _ in points), Fraction(0))
    slope = sum(((x - mean_x) * (y - mean_y) for x, y in points), Fraction(0)) / spread
    last = max(months)
    return Trend(min(months), last, n, mean_y + slope * (last - mean_x), slope)


def period_months(first_month: int, unit: str, count: int) -> list[int]:
    """The first month of each of ``count`` periods of ``unit``, from ``first_month``."""
    step = MONTHS_PER_UNIT[unit]
    return [first_month + step * k for k in range(count)]


# --- a whole request, as `cci forecast` flags or `GET /api/forecast` parameters ---------------

# Parameter names as the API spells them; the CLI's flags are the same with -- and dashes.
PARAMETERS = (
    "customers",
    "growth",
    "periods",
    "labels",
    "cci",
    "dimension",
    "segment",
    "month",
    "tickets_per_agent",
    "target_cci",
    "minutes_per_ticket",
    "trend_months",
)


class ParameterError(ValueError):
    """A parameter the plan cannot use; ``parameter`` is its API name."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Request:
    """What to plan: periods, capacity, and where the CCI comes from (given, measured or trend)."""

    labels: list[str]
    customers: list[int]
    unit: str  # month, quarter or year: the length of a period (for a trend)
    tickets_per_agent: Fraction
    cci: Fraction | None  # None: measured in the store (or a trend)
    dimension: str
    segment: str
    month: str | None  # YYYY-MM of the measured CCI (the newest month of a trend)
    trend_months: int | None
    what_if: WhatIf | None


def parse_request(
    values: Mapping[str, str], name: Callable[[str], str] = lambda parameter: parameter
) -> Request:
    """Check every parameter (raw text by API name; absent = not given) and build the request.
    A ParameterError names the first bad one; ``name`` spells parameters in messages (the CLI
    passes its flag names)."""

    def parsed(parameter: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(values[parameter])
        except ValueError as exc:
            raise ParameterError(parameter, str(exc)) from None

    for required in ("customers", "tickets_per_agent"):
        if required not in values:
            raise ParameterError(required, f"{name(required)} is required")
    counts = parsed("customers", parse_customers)
    labels = parsed("labels", parse_labels) if "labels" in values else None
    periods = parsed("periods", _parse_periods) if "periods" in values else None
    unit = DEFAULT_UNIT
    if "growth" in values:
        rule = parsed("growth", parse_growth)
        if len(counts) != 1:
            raise ParameterError(
                "customers",
                f"{name('growth')} projects from one number of customers, got {len(counts)}",
            )
        count = periods or (len(labels) if labels else DEFAULT_PERIODS)
        counts = parsed("growth", lambda _: rule.customers(counts[0], count))
        unit = rule.unit
    elif periods is not None and periods != len(counts):
        raise ParameterError(
            "periods", f"{periods} periods but {len(counts)} {name('customers')} values"
        )
    if labels is not None and len(labels) != len(counts):
        raise ParameterError("labels", f"{len(labels)} labels for {len(counts)} periods")
    capacity = parsed("tickets_per_agent", partial(parse_quantity, zero_allowed=False))

    cci = None
    if "cci" in values:
        for chosen in ("dimension", "segment", "month", "trend_months"):
            if chosen in values:
                raise ParameterError(
                    chosen,
                    f"{name('dimension')}, {name('segment')}, {name('month')} and "
                    f"{name('trend_months')} choose a measured CCI; leave them out with "
                    f"{name('cci')}",
                )
        cci = parsed("cci", partial(parse_quantity, zero_allowed=True))
    if ("dimension" in values) != ("segment" in values):
        missing = "segment" if "dimension" in values else "dimension"
        raise ParameterError(missing, f"{name('dimension')} and {name('segment')} go together")
    for text_parameter in ("dimension", "segment"):
        if text_parameter in values and not values[text_parameter].strip():
            raise ParameterError(text_parameter, "must not be empty")
    month = None
    if "month" in values:
        month = domain.month_label(parsed("month", domain.month_from_label))
    trend_months = parsed("trend_months", _parse_trend_months) if "trend_months" in values else None

    what_if = None
    if "target_cci" in values:
        target = parsed("target_cci", partial(parse_quantity, zero_allowed=True))
        minutes = (
            parsed("minutes_per_ticket", partial(parse_quantity, zero_allowed=False))
            if "minutes_per_ticket" in values
            else None
        )
        what_if = WhatIf(target, minutes)
    elif "minutes_per_ticket" in values:
        raise ParameterError(
            "minutes_per_ticket", f"{name('minutes_per_ticket')} goes with {name('target_cci')}"
        )
    return Request(
        labels=labels or period_labels(unit, len(counts)),
        customers=counts,
        unit=unit,
        tickets_per_agent=capacity,
        cci=cci,
        dimension=values.get("dimension", domain.ALL),
        segment=values.get("segment", domain.ALL),
        month=month,
        trend_months=trend_months,
        what_if=what_if,
    )


def _parse_whole(text: str, low: int, high: int) -> int:
    if not _WHOLE.fullmatch(text.strip()):
        raise ValueError(f"expected a whole number, got {text!r}")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"must be from {low} to {high}, got {number}")
    return number


def _parse_periods(text: str) -> int:
    return _parse_whole(text, 1, MAX_PERIODS)


def _parse_trend_months(text: str) -> int:
    return _parse_whole(text, 2, MAX_TREND_MONTHS)


# --- output --------------------------------------------------------------------------------------


def round_half_up(value: Fraction) -> int:
    """The nearest whole number, halves away from zero (as people and spreadsheets round)."""
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return -magnitude if value < 0 else magnitude


def decimal_text(value: Fraction, places: int, *, trim: bool = False) -> str:
    """``value`` with ``places`` decimals, rounded half up from the exact value (so 2.145 is
    2.15, which float formatting gets wrong); ``trim`` drops trailing zeros (1.50 → 1.5)."""
    units = round_half_up(value * 10**places)
    whole, part = divmod(abs(units), 10**places)
    text = f"{whole}.{part:0{places}d}" if places else str(whole)
    if trim and places:
        text = text.rstrip("0").rstrip(".")
    return f"-{text}" if units < 0 else text


TABLE_ROWS = (
    "customers",
    "CCI",
    "expected tickets / month",
    "tickets per agent / month",
    "agents needed",
    "headcount",
)
WHAT_IF_ROWS = (
    "target CCI",
    "headcount at target CCI",
    "agents not needed",
)
HOURS_ROW = "support hours saved / month"


def table_cells(plans: Sequence[PeriodPlan]) -> tuple[list[str], list[list[str]]]:
    """The article's layout: one column per period, one row per quantity (see TABLE_ROWS; a
    what-if adds WHAT_IF_ROWS, and HOURS_ROW with minutes per ticket). Agents needed keep two
    decimals; CCI up to four, tickets and hours up to two, trailing zeros dropped."""
    headers = ["", *(p.period for p in plans)]
    values = [
        [str(p.customers) for p in plans],
        [decimal_text(p.cci, 4, trim=True) for p in plans],
        [decimal_text(p.expected_tickets, 2, trim=True) for p in plans],
        [decimal_text(p.tickets_per_agent, 2, trim=True) for p in plans],
        [decimal_text(p.agents_needed, 2) for p in plans],
        [str(p.headcount) for p in plans],
    ]
    names = list(TABLE_ROWS)
    targets = [p.at_target for p in plans if p.at_target is not None]
    if targets and len(targets) == len(plans):
        names += WHAT_IF_ROWS
        values += [
            [decimal_text(t.cci, 4, trim=True) for t in targets],
            [str(t.headcount) for t in targets],
            [str(t.agents_not_needed) for t in targets],
        ]
        hours = [t.hours_saved for t in targets if t.hours_saved is not None]
        if len(hours) == len(targets):
            names.append(HOURS_ROW)
            values.append([decimal_text(h, 2, trim=True) for h in hours])
    return headers, [[name, *row] for name, row in zip(names, values, strict=True)]


def json_records(plans: Sequence[PeriodPlan]) -> list[dict[str, str | int | float]]:
    """One object per period; counts are integers, the rest floats (full precision). A what-if
    adds ``target_cci``, ``agents_needed_at_target``, ``headcount_at_target``,
    ``agents_not_needed`` and, with minutes per ticket, ``support_hours_saved``."""
    records: list[dict[str, str | int | float]] = []
    for p in plans:
        record: dict[str, str | int | float] = {
            "period": p.period,
            "customers": p.customers,
            "cci": float(p.cci),
            "expected_tickets": float(p.expected_tickets),
            "tickets_per_agent": float(p.tickets_per_agent),
            "agents_needed": float(p.agents_needed),
            "headcount": p.headcount,
        }
        target = p.at_target
        if target is not None:
            record["target_cci"] = float(target.cci)
            record["agents_needed_at_target"] = float(target.agents_needed)
            record["headcount_at_target"] = target.headcount
            record["agents_not_needed"] = target.agents_not_needed
            if target.hours_saved is not None:
                record["support_hours_saved"] = float(target.hours_saved)
        records.append(record)
    return records


def json_text(plans: Sequence[PeriodPlan]) -> str:
    """What ``cci forecast --format json`` prints and ``GET /api/forecast`` answers, byte for
    byte."""
    return orjson.dumps(json_records(plans), option=orjson.OPT_INDENT_2).decode() + "\n"
