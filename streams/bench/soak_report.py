"""``cci soak``'s report: a sample of the worker per simulated month, whether its memory stays
flat once the state holds the whole retention window, and how the report is shown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

FLAT_TOLERANCE_PCT = 5.0  # RSS growth after retention is full that still counts as flat
MIB = 1024 * 1024


@dataclass(frozen=True)
class MonthSample:
    """The worker after simulated month ``index`` (0: started, before any traffic)."""

    index: int
    month: str
    events: int
    expected_user_months: int
    user_months: int | None
    state_bytes: int | None
    rss_bytes: int | None
    store_bytes: int | None  # the embedded ClickHouse engine's own memory accounting
    seconds: float  # from the first event produced to the month processed


@dataclass(frozen=True)
class Flatness:
    """RSS from the first month whose state holds the whole retention window to the last."""

    from_month: str
    to_month: str
    rss_from_bytes: int
    rss_to_bytes: int
    growth_bytes: int
    growth_pct: float
    slope_bytes_per_month: float  # least squares over those months: growth that is not noise
    # The same over the later half of them: allocators warm up for a few months after the first
    # expiry, so a slope that persists here is growth that goes on.
    late_slope_bytes_per_month: float
    flat: bool  # growth_pct within FLAT_TOLERANCE_PCT


@dataclass
class SoakReport:
    started_at: str
    months: int
    retain_months: int
    users: int
    tickets_per_user: float
    partitions: int
    samples: list[MonthSample] = field(default_factory=list)
    flatness: Flatness | None = None
    dead_letters: int = 0
    worker_peak_rss_bytes: int | None = None
    worker_log: str = ""


def flatness(
    samples: Sequence[MonthSample], retain_months: int, tolerance_pct: float = FLAT_TOLERANCE_PCT
) -> Flatness | None:
    """RSS growth from month ``retain_months`` (the state first holds the whole window) to the
    last month; None without two such months with a known RSS."""
    window = [s for s in samples if s.index >= retain_months and s.rss_bytes is not None]
    if len(window) < 2:
        return None
    first, last = window[0], window[-1]
    assert first.rss_bytes is not None and last.rss_bytes is not None
    growth = last.rss_bytes - first.rss_bytes
    growth_pct = 100.0 * growth / first.rss_bytes
    points = [(float(s.index), float(s.rss_bytes or 0)) for s in window]
    return Flatness(
        from_month=first.month,
        to_month=last.month,
        rss_from_bytes=first.rss_bytes,
        rss_to_bytes=last.rss_bytes,
        growth_bytes=growth,
        growth_pct=growth_pct,
        slope_bytes_per_month=slope(points),
        late_slope_bytes_per_month=slope(points[len(points) // 2 :]),
        flat=growth_pct <= tolerance_pct,
    )


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; 0 for fewer than two distinct x."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def mib(value: float | None) -> str:
    return "?" if value is None else f"{value / MIB:,.1f}"


def render_table(report: SoakReport) -> str:
    lines = [
        f"cci soak: {report.months} simulated months, CCI_RETAIN_MONTHS={report.retain_months}, "
        f"{report.users:,} active users a month, {report.tickets_per_user:g} tickets per user, "
        f"{report.partitions} partitions (started {report.started_at})",
        "",
        f"{'#':>3}  {'month':<7}  {'events':>8}  {'user-months':>11}  {'expected':>9}  "
        f"{'state MiB':>9}  {'RSS MiB':>8}  {'store MiB':>9}  {'seconds':>7}",
    ]
    for s in report.samples:
        held = "?" if s.user_months is None else f"{s.user_months:,}"
        lines.append(
            f"{s.index:>3}  {s.month:<7}  {s.events:>8,}  {held:>11}  "
            f"{s.expected_user_months:>9,}  {mib(s.state_bytes):>9}  {mib(s.rss_bytes):>8}  "
            f"{mib(s.store_bytes):>9}  {s.seconds:>7.1f}"
        )
    lines.append("")
    f = report.flatness
    if f is None:
        lines.append("RSS after retention is full: not enough months to tell")
    else:
        verdict = "flat" if f.flat else f"NOT flat (over {FLAT_TOLERANCE_PCT:g} %)"
        lines.append(
            f"RSS after retention is full: {mib(f.rss_from_bytes)} MiB ({f.from_month}) → "
            f"{mib(f.rss_to_bytes)} MiB ({f.to_month}): {f.growth_bytes / MIB:+,.1f} MiB "
            f"({f.growth_pct:+.1f} %), slope {f.slope_bytes_per_month / MIB:+,.2f} MiB/month "
            f"({f.late_slope_bytes_per_month / MIB:+,.2f} over the later half): {verdict}"
        )
    lines.append(
        f"dead letters: {report.dead_letters}; worker peak RSS {mib(report.worker_peak_rss_bytes)}"
        f" MiB; log {report.worker_log}"
    )
    return "\n".join(lines)


def report_json(report: SoakReport) -> str:
    document = asdict(report)
    document["flat_tolerance_pct"] = FLAT_TOLERANCE_PCT
    return json.dumps(document, indent=2)
