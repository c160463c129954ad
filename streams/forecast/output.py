"""How a plan is shown: exact numbers as decimal text, the article's table (one column per
period), and the JSON that ``cci forecast --format json`` prints and ``GET /api/forecast``
answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import orjson

from streams.forecast.staffing import PeriodPlan


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
