"""A trend: each period its own CCI, from a least-squares line through a segment's monthly CCI
(docs/forecast.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

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
