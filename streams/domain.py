"""The product's rules as pure functions: calendar months, tenure, segments, CCI and staffing
arithmetic.

Nothing here imports Faust or Kafka, so the rules are tested directly and shared by the stream, the
batch recount and the generator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo

ALL = "all"
UNKNOWN = "unknown"
PROFILE_DIMENSIONS: tuple[str, ...] = ("plan", "product", "region")
TENURE = "tenure"
CHANNEL = "channel"
TENURE_BUCKETS: tuple[str, ...] = ("new", "1-2m", "3-11m", "12m+")
# Staffing arithmetic works on floats or, exactly, on Fractions; the result has the input's type.
Quantity = TypeVar("Quantity", float, Fraction)


# --- calendar months ---------------------------------------------------------------------------
# A month is an integer index (year * 12 + month - 1): cheap to compare, subtract and hash.


def month_of(moment: datetime, zone: ZoneInfo) -> int:
    """Index of the calendar month that an aware timestamp falls in, in ``zone`` (DST-correct)."""
    local = moment.astimezone(zone)
    return local.year * 12 + local.month - 1


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
DAY_MICROS = 86_400_000_000
_EPOCH_ORDINAL = EPOCH.toordinal()


def epoch_micros(moment: datetime) -> int:
    """Exact µs since the epoch (integer arithmetic: no float rounding)."""
    return (moment - EPOCH) // MICROSECOND


def month_of_micros(micros: int, zone: ZoneInfo) -> int:
    """``month_of`` for a time in µs since the epoch, without a time-zone conversion per call.

    Every zone's offset is under a day, so an instant whose UTC day is neither the first nor the
    last of its month is in that month in any zone. On those two days the month changes at most
    once, at the zone's local midnight, which is computed once per day and zone; only a day on
    which the zone's offset changes converts each instant.
    """
    months = _day_months(micros // DAY_MICROS, zone)
    if type(months) is int:
        return months
    if months is None:
        return month_of(EPOCH + timedelta(microseconds=micros), zone)
    change, before, after = months
    return before if micros < change else after


# Offsets are sampled this often over a day: a zone whose offset changes and changes back within
# it would hide a transition (no zone in the tz database does so within a day, let alone this).
_OFFSET_SAMPLE = timedelta(minutes=15)


@lru_cache(maxsize=8192)
def _day_months(day: int, zone: ZoneInfo) -> int | tuple[int, int, int] | None:
    """What ``month_of_micros`` needs of a UTC day (since the epoch) in ``zone``: its month
    when the whole day is in one; (first µs of the next month, month before, month from then)
    when the month changes during it at a constant offset; None when the offset changes."""
    start = EPOCH + timedelta(days=day)
    today = start.date()
    if today.day != 1 and (today + timedelta(days=1)).day != 1:
        return today.year * 12 + today.month - 1
    last = start + timedelta(days=1) - MICROSECOND
    offsets = set()
    moment = start
    while moment <= last:
        offsets.add(moment.astimezone(zone).utcoffset())
        moment += _OFFSET_SAMPLE
    offsets.add(last.astimezone(zone).utcoffset())
    if len(offsets) != 1:
        return None
    before, after = month_of(start, zone), month_of(last, zone)
    if before == after:
        return before
    # One offset all day: the local time runs on with the UTC time, and the month changes at the
    # local midnight that starts ``after``.
    (offset,) = offsets
    local_midnight = datetime.combine(month_start(after), time(), tzinfo=UTC)
    return epoch_micros(local_midnight - offset), before, after


def month_start_micros(month: int) -> int:
    """µs since the epoch of the month's first UTC midnight."""
    return (month_start(month).toordinal() - _EPOCH_ORDINAL) * DAY_MICROS


def month_label(month: int) -> str:
    """``2026-11`` for a month index."""
    year, zero_based = divmod(month, 12)
    return f"{year:04d}-{zero_based + 1:02d}"


def month_from_label(label: str) -> int:
    """Month index of ``YYYY-MM``; ValueError for anything else."""
    year_text, sep, month_text = label.partition("-")
    if not sep or len(year_text) != 4 or len(month_text) != 2:
        raise ValueError(f"expected YYYY-MM, got {label!r}")
    year, month = int(year_text), int(month_text)
    if not 1 <= month <= 12:
        raise ValueError(f"month out of range in {label!r}")
    return year * 12 + month - 1


def month_start(month: int) -> date:
    """First day of the month, as analysts' ``Date`` column holds it."""
    year, zero_based = divmod(month, 12)
    return date(year, zero_based + 1, 1)


def oldest_retained_month(now: datetime, zone: ZoneInfo, retain_months: int) -> int:
    """The earliest month whose state is kept: this month and the ``retain_months - 1`` before."""
    return month_of(now, zone) - (retain_months - 1)


# --- segments ----------------------------------------------------------------------------------


def tenure_bucket(signup_month: int | None, event_month: int) -> str:
    """Whole calendar months from signup to the event: 0 new, 1-2, 3-11, 12+; no signup unknown.

    A signup after the event (a profile corrected later) counts as ``new`` rather than inventing a
    negative tenure.
    """
    if signup_month is None:
        return UNKNOWN
    months = event_month - signup_month
    if months <= 0:
        return "new"
    if months <= 2:
        return "1-2m"
    if months <= 11:
        return "3-11m"
    return "12m+"


def user_dimensions(extra_dimensions: Sequence[str]) -> tuple[str, ...]:
    """Dimensions that split both tickets and active users, in attribute-tuple order."""
    extras = tuple(
        d for d in extra_dimensions if d not in (*PROFILE_DIMENSIONS, TENURE, CHANNEL, ALL)
    )
    return PROFILE_DIMENSIONS + extras + (TENURE,)


def user_attributes(
    dimensions: Sequence[str],
    event_segments: Mapping[str, str] | None,
    profile_segments: Mapping[str, str] | None,
    signup_month: int | None,
    event_month: int,
) -> tuple[str, ...]:
    """One value per dimension of ``user_dimensions`` for an event in ``event_month``: for a
    segment, the event's own value, else the profile's, else ``unknown`` (empty is no value)."""
    # A plain loop with the rule inline: this runs once per event, and a generator or a call per
    # dimension costs a third more.
    values = []
    for dimension in dimensions:
        if dimension == TENURE:
            values.append(tenure_bucket(signup_month, event_month))
        else:
            values.append(
                (event_segments and event_segments.get(dimension))
                or (profile_segments and profile_segments.get(dimension))
                or UNKNOWN
            )
    return tuple(values)


OTHER = "other"  # the bucket of the values the cardinality guard does not name


def named_values(values: Iterable[str], max_values: int) -> frozenset[str] | None:
    """The cardinality guard, for one dimension's values in one month and facts partition: None
    while there are at most ``max_values`` (each keeps its name); beyond, the ``max_values``
    smallest (by code point), ``other`` aside, keep theirs and the rest count as ``other``.

    Smallest rather than first seen: arrival order differs between replays and workers, and the
    rule must give the same figures as the recount whatever the order.
    """
    distinct = set(values)
    if len(distinct) <= max_values:
        return None
    distinct.discard(OTHER)
    return frozenset(sorted(distinct)[:max_values])


def segment_keys(dimensions: Sequence[str], attributes: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(dimension, segment) pairs a fact counts under, the global ``all/all`` included."""
    yield ALL, ALL
    yield from zip(dimensions, attributes, strict=True)


# --- CCI arithmetic ----------------------------------------------------------------------------


def cci(tickets: int, active_users: int) -> float | None:
    """Tickets per active user; undefined (None) without active users."""
    if active_users <= 0:
        return None
    return tickets / active_users


def contact_rate_pct(tickets: int, active_users: int) -> float | None:
    """The same ratio in the contact-rate form: contacts per 100 customers."""
    ratio = cci(tickets, active_users)
    return None if ratio is None else 100.0 * ratio


def cci_ratio(tickets: int, active_users: int) -> Fraction | None:
    """The CCI as an exact ratio, for arithmetic that must not drift (headcount planning)."""
    if active_users <= 0:
        return None
    return Fraction(tickets, active_users)


def agents_needed(expected_tickets: Quantity, tickets_per_agent: Quantity) -> Quantity:
    """Agent workload in full-time agents (may be fractional); exact when given Fractions."""
    if tickets_per_agent <= 0:
        raise ValueError("tickets per agent must be positive")
    return expected_tickets / tickets_per_agent


def headcount(agents: float | Fraction) -> int:
    """Agents to hire: the fraction of an agent still needs a person, so round up.

    An exact Fraction rounds up exactly (225/75 is 3 people). A float gets a tolerance that absorbs
    float noise (e.g. 2.0000000001 from 140.0 / 70) before rounding up.
    """
    if isinstance(agents, Fraction):
        return math.ceil(agents)
    return math.ceil(round(agents, 9))


# --- the contact-rate target range ---------------------------------------------------------------
# The contact-rate article reads the rate against a range (20–30% by default, CCI_TARGET_RANGE_PCT).

BELOW = "below"
WITHIN = "within"
ABOVE = "above"
BANDS: tuple[str, ...] = (BELOW, WITHIN, ABOVE)


@dataclass(frozen=True)
class TargetRange:
    """The healthy contact rate, in percent of active customers: ``low`` ≤ rate ≤ ``high``.

    Exact (Fractions from the setting's decimal text), so a boundary is judged exactly."""

    low: Fraction
    high: Fraction

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high:
            raise ValueError(f"expected 0 <= low < high, got {self}")

    def __str__(self) -> str:
        return f"{_pct_text(self.low)},{_pct_text(self.high)}"

    def guidance(self) -> dict[str, str]:
        """What each band asks of the reader, after the two articles (shown on hover)."""
        low, high = _pct_text(self.low), _pct_text(self.high)
        return {
            BELOW: f"Below {low}%: signals possible disengagement; investigate underlying causes "
            "(are customers finding it hard to reach you?).",
            WITHIN: f"{low}–{high}%: healthy range; monitor for potential issues.",
            ABOVE: f"Above {high}%: frequent contact. Strong engagement, or customers who need too "
            "much help: check that contacts are not repeats for unresolved problems, and "
            "invest in self-service.",
        }


DEFAULT_TARGET_RANGE = TargetRange(Fraction(20), Fraction(30))


def _pct_text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def parse_target_range(text: str) -> TargetRange:
    """``20,30``: low and high percent, plain decimals, low < high; ValueError otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(_PERCENT.fullmatch(part) for part in parts):
        raise ValueError(f"expected LOW,HIGH in percent such as 20,30, got {text!r}")
    low, high = (Fraction(part) for part in parts)
    if low >= high:
        raise ValueError(f"the low end must be below the high end, got {text!r}")
    return TargetRange(low, high)


_PERCENT = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def band(tickets: int, active_users: int, target: TargetRange) -> str | None:
    """Where a figure's contact rate falls against ``target``: below, within (bounds included)
    or above; None without active users (no rate).

    Judged on the exact ratio 100 × tickets / active users, not the float ``contact_rate_pct``
    (7 of 25 is 28.000000000000004 as a float but exactly 28%: within a 20–28 range)."""
    if active_users <= 0:
        return None
    rate = Fraction(100 * tickets, active_users)
    if rate < target.low:
        return BELOW
    if rate > target.high:
        return ABOVE
    return WITHIN
