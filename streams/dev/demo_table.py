"""``cci demo``'s table: ``cci-updates`` records → the current month's rows, and their rendering
(a ``rich`` live table on a terminal, a plain table every few seconds otherwise)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from streams import domain
from streams.dev.demo_traffic import TrafficCounters
from streams.kafka.follow import TopicFollower
from streams.settings import TOPIC_UPDATES, Settings
from streams.web.dashboard.view import LatestBook, Record, is_figure, segment_order

RATE_WINDOW_S = 5.0


class RateMeter:
    """Events per second over the last few seconds, from samples of a rising counter."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def rate(self, now: float, count: int) -> float:
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        first_time, first_count = self.samples[0]
        elapsed = now - first_time
        return (count - first_count) / elapsed if elapsed > 0 else 0.0


# --- updates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CciRow:
    """One segment's figures as the table shows them."""

    dimension: str
    segment: str
    tickets: int
    active_users: int
    cci: float | None
    contact_rate_pct: float | None


@dataclass
class UpdatesView:
    """The newest ``cci-updates`` figure per key (the dashboard's ``LatestBook``: highest version
    wins, unreadable values are ignored), and the table rows of one month."""

    book: LatestBook = field(default_factory=lambda: LatestBook(accepts=is_figure))

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        self.book.apply(key, value)

    def rows(self, month: str, dimensions: Sequence[str]) -> list[CciRow]:
        """The month's segments, dimensions in ``dimensions`` order (others after), segments in
        the dashboard's order, emptied segments (no tickets, no active users) left out."""
        order = {dimension: index for index, dimension in enumerate(dimensions)}
        rows = [
            _row(record)
            for record in self.book.records.values()
            if record["month"] == month and (record["tickets"] or record["active_users"])
        ]
        return sorted(
            rows,
            key=lambda row: (
                order.get(row.dimension, len(order)),
                row.dimension,
                segment_order(row.dimension, row.segment),
            ),
        )


def _row(record: Record) -> CciRow:
    return CciRow(
        dimension=record["dimension"],
        segment=record["segment"],
        tickets=record["tickets"],
        active_users=record["active_users"],
        cci=record.get("cci"),
        contact_rate_pct=record.get("contact_rate_pct"),
    )


def table_dimensions(settings: Settings) -> tuple[str, ...]:
    """all, plan, product, region, the extra dimensions, tenure, channel."""
    return (domain.ALL, *domain.user_dimensions(settings.extra_dimensions), domain.CHANNEL)


async def read_updates(bootstrap: str, view: UpdatesView) -> None:
    """Follow every partition of ``cci-updates`` from the beginning into ``view`` until cancelled;
    raises when following fails (the demo then stops with the reason)."""
    follower = TopicFollower(bootstrap, TOPIC_UPDATES, view.apply)
    await follower.start()
    try:
        await follower.failed.wait()
        raise RuntimeError(f"following {TOPIC_UPDATES} failed: {follower.last_error}")
    finally:
        await follower.stop()


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """Everything above the table."""

    month: str
    timezone: str
    counters: TrafficCounters
    events_per_s: float
    health: str
    dashboard_url: str
    worker_log: Path

    def feed(self) -> str:
        counters = self.counters
        if counters.live:
            return f"history {counters.history_sent:,} + live {counters.live_sent:,}"
        return f"loading history {counters.history_sent:,}/{counters.history_total:,}"

    def line(self) -> str:
        return (
            f"events produced {self.counters.events:,} ({self.feed()}) · "
            f"{self.events_per_s:,.0f} events/s · worker {self.health} · "
            f"dashboard {self.dashboard_url}"
        )


def _ratio(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def rich_view(header: Header, rows: Sequence[CciRow]) -> RenderableType:
    waiting = "" if rows else "waiting for the first figures from the worker…\n"
    table = Table(
        title=f"Customer Contact Index, {header.month} ({header.timezone})",
        caption=f"{waiting}Ctrl-C stops everything · worker log {header.worker_log}",
    )
    table.add_column("dimension", style="bold")
    table.add_column("segment")
    table.add_column("tickets", justify="right")
    table.add_column("active users", justify="right")
    table.add_column("CCI", justify="right", style="bold cyan")
    table.add_column("contact rate %", justify="right")
    for index, row in enumerate(rows):
        first_of_dimension = index == 0 or rows[index - 1].dimension != row.dimension
        last_of_dimension = index == len(rows) - 1 or rows[index + 1].dimension != row.dimension
        table.add_row(
            row.dimension if first_of_dimension else "",
            row.segment,
            f"{row.tickets:,}",
            f"{row.active_users:,}",
            _ratio(row.cci, 2),
            _ratio(row.contact_rate_pct, 1),
            end_section=last_of_dimension,
        )
    health_style = "green" if header.health == "ok" else "yellow"
    status = Text.assemble(
        ("events produced ", "dim"),
        (f"{header.counters.events:,}", "bold"),
        (f" ({header.feed()})", "dim"),
        ("  ·  ", "dim"),
        (f"{header.events_per_s:,.0f}", "bold"),
        (" events/s", "dim"),
        # Two lines, so the header fits an 80-column terminal.
        ("\nworker ", "dim"),
        (header.health, f"bold {health_style}"),
        ("  ·  dashboard ", "dim"),
        (header.dashboard_url, f"underline link {header.dashboard_url}"),
    )
    return Group(status, table)


def plain_view(header: Header, rows: Sequence[CciRow]) -> str:
    """The same table as fixed-width text: for logs, CI and pipes."""
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    lines = [
        f"[{stamp}] {header.line()} · month {header.month}",
        f"{'dimension':<10} {'segment':<10} {'tickets':>8} {'active users':>12} "
        f"{'CCI':>6} {'contact rate %':>14}",
    ]
    lines += [
        f"{row.dimension:<10} {row.segment:<10} {row.tickets:>8,} {row.active_users:>12,} "
        f"{_ratio(row.cci, 2):>6} {_ratio(row.contact_rate_pct, 1):>14}"
        for row in rows
    ]
    if not rows:
        lines.append("(waiting for the first figures)")
    return "\n".join(lines) + "\n"
