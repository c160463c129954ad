"""Headcount planning (``cci forecast``): customers per period × CCI → tickets → agents.

The question of the first article, "if we add customers, how many agents do we need?". CCI counts
contacts per customer per month and an agent handles so many tickets per month, so every row of a
plan is a monthly workload at that period's number of customers:

    expected tickets = customers × CCI
    agents needed    = expected tickets / tickets per agent      (domain.agents_needed)
    headcount        = agents needed rounded up                  (domain.headcount)

Every quantity is an exact ``Fraction`` (flags are parsed from their decimal text, a measured CCI is
tickets / active users), so 150 × 1.5 / 75 is exactly 3 people, never 3.0000000001 → 4. Floats
appear only in the JSON output. Pure: no click, no store; the CLI parses flags with these functions.

Growth grammar (``--growth``), one period per UNIT, the first period being ``--customers``:

    N/UNIT      N more customers every period (N a whole number, ``-N`` for a loss)
    P%/UNIT     P percent more every period, compounded (P a decimal, ``-P%`` for a loss);
                each period's customers are the exact compounded value rounded half up
    UNIT        month | quarter | year; it also names the periods: M1…, Q1…, Y1…
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from streams import domain

PERIOD_PREFIXES = {"month": "M", "quarter": "Q", "year": "Y"}
DEFAULT_UNIT = "quarter"  # the article plans by quarter
DEFAULT_PERIODS = 4  # with --growth and neither --periods nor --labels
MAX_PERIODS = 120

_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_WHOLE = re.compile(r"[+-]?[0-9]+")
_GROWTH = re.compile(
    r"(?P<amount>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))(?P<percent>%?)/(?P<unit>[a-z]+)"
)


# --- parsing flags (ValueError says what is wrong; the CLI names the flag) -----------------------


def parse_quantity(text: str, *, zero_allowed: bool) -> Fraction:
    """A plain decimal (``70``, ``1.5``) as an exact Fraction; negative is an error, and so is
    zero unless ``zero_allowed``."""
    cleaned = text.strip()
    if not _DECIMAL.fullmatch(cleaned):
        raise ValueError(f"expected a decimal number such as 1.5, got {text!r}")
    value = Fraction(cleaned)
    if value < 0 or (value == 0 and not zero_allowed):
        raise ValueError(f"must be {'zero or more' if zero_allowed else 'more than zero'}: {text}")
    return value


def parse_customers(text: str) -> list[int]:
    """``100,150,200``: one whole, non-negative number of customers per period."""
    counts: list[int] = []
    for part in text.split(","):
        item = part.strip()
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
        return counts

    def __str__(self) -> str:
        return f"{decimal_text(self.amount, 4, trim=True)}{'%' if self.percent else ''}/{self.unit}"


def parse_growth(text: str) -> Growth:
    """``50/quarter``, ``10%/month``, ``-2.5%/year`` (see the module's grammar)."""
    match = _GROWTH.fullmatch(text.strip().lower().replace(" ", ""))
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
class PeriodPlan:
    """One period's monthly workload and the agents it needs, exactly."""

    period: str
    customers: int
    cci: Fraction
    expected_tickets: Fraction
    tickets_per_agent: Fraction
    agents_needed: Fraction
    headcount: int


def plan(
    labels: Sequence[str], customers: Sequence[int], cci: Fraction, tickets_per_agent: Fraction
) -> list[PeriodPlan]:
    """A plan per period; ``labels`` and ``customers`` pair up one to one."""
    if len(labels) != len(customers):
        raise ValueError(f"{len(labels)} period labels for {len(customers)} periods")
    plans = []
    for label, count in zip(labels, customers, strict=True):
        expected = count * cci
        agents = domain.agents_needed(expected, tickets_per_agent)
        plans.append(
            PeriodPlan(
                period=label,
                customers=count,
                cci=cci,
                expected_tickets=expected,
                tickets_per_agent=tickets_per_agent,
                agents_needed=agents,
                headcount=domain.headcount(agents),
            )
        )
    return plans


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


def table_cells(plans: Sequence[PeriodPlan]) -> tuple[list[str], list[list[str]]]:
    """The article's layout: one column per period, one row per quantity (see TABLE_ROWS).
    Agents needed keep two decimals; CCI up to four, tickets up to two, trailing zeros dropped."""
    headers = ["", *(p.period for p in plans)]
    values = [
        [str(p.customers) for p in plans],
        [decimal_text(p.cci, 4, trim=True) for p in plans],
        [decimal_text(p.expected_tickets, 2, trim=True) for p in plans],
        [decimal_text(p.tickets_per_agent, 2, trim=True) for p in plans],
        [decimal_text(p.agents_needed, 2) for p in plans],
        [str(p.headcount) for p in plans],
    ]
    return headers, [[name, *row] for name, row in zip(TABLE_ROWS, values, strict=True)]


def json_records(plans: Sequence[PeriodPlan]) -> list[dict[str, str | int | float]]:
    """One object per period; counts are integers, the rest floats (full precision)."""
    return [
        {
            "period": p.period,
            "customers": p.customers,
            "cci": float(p.cci),
            "expected_tickets": float(p.expected_tickets),
            "tickets_per_agent": float(p.tickets_per_agent),
            "agents_needed": float(p.agents_needed),
            "headcount": p.headcount,
        }
        for p in plans
    ]
