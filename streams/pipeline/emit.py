"""Stage 5 of the dataflow: totals → ``cci-updates`` records with strictly rising versions.

A record's ``version`` is the emission time in µs, or the previous version + 1 when the clock has
not moved on. Because it comes from the clock, it keeps rising across restarts and rebalances
without being stored (as long as the workers' clocks agree to within a rebalance's duration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams import domain


def update_key(month: int, dimension: str, segment: str) -> str:
    return f"{domain.month_label(month)}|{dimension}|{segment}"


def figure_fields(
    month_label: str, dimension: str, segment: str, tickets: int, active_users: int
) -> dict[str, Any]:
    """The figure part of a cci-updates value (shared with the batch recount's expectations)."""
    return {
        "month": month_label,
        "dimension": dimension,
        "segment": segment,
        "tickets": tickets,
        "active_users": active_users,
        "cci": domain.cci(tickets, active_users),
        "contact_rate_pct": domain.contact_rate_pct(tickets, active_users),
    }


def update_value(
    month: int,
    dimension: str,
    segment: str,
    tickets: int,
    active_users: int,
    version: int,
    emitted_at: datetime,
    *,
    target: domain.TargetRange = domain.DEFAULT_TARGET_RANGE,
) -> dict[str, Any]:
    """A cci-updates value: the figure, its band against the target range (CCI_TARGET_RANGE_PCT),
    its version and when it was emitted."""
    return {
        **figure_fields(domain.month_label(month), dimension, segment, tickets, active_users),
        "band": domain.band(tickets, active_users, target),
        "version": version,
        "emitted_at": rfc3339(emitted_at),
    }


def rfc3339(moment: datetime) -> str:
    """UTC, milliseconds, ``Z``: ``2026-03-15T12:03:20.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Versions:
    """Strictly rising version per update key."""

    last: dict[str, int] = field(default_factory=dict)

    def next(self, key: str, now: datetime | None = None) -> int:
        moment = now or datetime.now(UTC)
        micros = int(moment.timestamp() * 1_000_000)
        version = max(self.last.get(key, 0) + 1, micros)
        self.last[key] = version
        return version

    def forget(self, expired: Callable[[str], bool]) -> list[str]:
        """Drop the keys ``expired`` says are past retention (their months take no more
        figures, so no version is needed again); return them."""
        gone = [key for key in self.last if expired(key)]
        for key in gone:
            del self.last[key]
        return gone
