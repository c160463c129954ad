"""The parameters of a plan: ``cci forecast``'s flags and ``GET /api/forecast``'s query, checked
and read into a ``Request`` (``parse_request``); a ValueError says what is wrong, a ParameterError
also which parameter.

Growth grammar (``--growth``), one period per UNIT, the first period being ``--customers``:

    N/UNIT      N more customers every period (N a whole number, ``-N`` for a loss)
    P%/UNIT     P percent more every period, compounded (P a decimal, ``-P%`` for a loss);
                each period's customers are the exact compounded value rounded half up
    UNIT        month | quarter | year; it also names the periods: M1…, Q1…, Y1…
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import TypeVar

from streams import domain
from streams.forecast.output import decimal_text, round_half_up
from streams.forecast.staffing import WhatIf
from streams.forecast.trend import MAX_TREND_MONTHS

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
