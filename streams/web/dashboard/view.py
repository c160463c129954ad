"""What the dashboard shows, as pure code (no Faust, no Kafka, no web server).

The dashboard's source is two compacted topics read from the beginning: ``cci-updates`` (figures)
and ``cci-alerts``. ``LatestBook`` keeps the newest record per key (highest ``version``), so a
replay, a resend or an out-of-order record changes nothing. ``DashboardView`` shapes the books into
what the JSON API answers and the live stream pushes: a month's figures per dimension and segment,
each segment's history over the retained months, and the alerts. Query parameters are checked here
too; a bad one raises ``BadParameter`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streams import domain
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, Settings

Record = dict[str, Any]
Query = Mapping[str, Sequence[str]]

FIRING = "firing"
CLEARED = "cleared"
ALERT_STATES = (FIRING, CLEARED)
ALERT_FILTERS = (FIRING, CLEARED, "all")


# --- the newest record per key -------------------------------------------------------------------


def _is_label(value: Any) -> bool:
    try:
        domain.month_from_label(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_keyed(record: Record) -> bool:
    """Fields every record needs to be placed: month, dimension, segment and a version."""
    return (
        _is_label(record.get("month"))
        and isinstance(record.get("dimension"), str)
        and isinstance(record.get("segment"), str)
        and isinstance(record.get("version"), int)
        and not isinstance(record.get("version"), bool)
    )


def is_figure(record: Record) -> bool:
    """A usable cci-updates value."""
    return (
        _is_keyed(record)
        and _is_count(record.get("tickets"))
        and _is_count(record.get("active_users"))
    )


def is_alert(record: Record) -> bool:
    """A usable cci-alerts value."""
    return (
        _is_keyed(record)
        and isinstance(record.get("rule"), str)
        and record.get("state") in ALERT_STATES
    )


@dataclass
class LatestBook:
    """key → the record with the highest ``version`` seen; a tombstone (no value) deletes it."""

    accepts: Callable[[Record], bool]
    records: dict[str, Record] = field(default_factory=dict)
    ignored: int = 0  # values that were not JSON objects of the expected shape
    oldest_label: str = ""  # records of earlier months are past retention: not kept

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record; True when the book changed."""
        if key is None:
            self.ignored += 1
            return False
        name = key.decode("utf-8", "replace")
        if value is None:
            return self.records.pop(name, None) is not None
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not self.accepts(record):
            self.ignored += 1
            return False
        if record["month"] < self.oldest_label:
            return False
        current = self.records.get(name)
        if current is not None and current["version"] >= record["version"]:
            return False
        self.records[name] = record
        return True

    def forget_months_before(self, oldest_label: str) -> bool:
        """Drop records of months before ``oldest_label`` (``YYYY-MM``); True when any went."""
        self.oldest_label = oldest_label
        expired = [name for name, r in self.records.items() if r["month"] < oldest_label]
        for name in expired:
            del self.records[name]
        return bool(expired)


# --- query parameters ----------------------------------------------------------------------------


class BadParameter(ValueError):
    """A query parameter the API cannot use; answered with 400 and this JSON body."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter

    def body(self) -> dict[str, str]:
        return {"error": str(self), "parameter": self.parameter}


def read_params(query: Query, allowed: Sequence[str]) -> dict[str, str]:
    """One value per parameter; an empty value counts as not given (as HTML forms send it)."""
    for name, values in query.items():
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise BadParameter(name, f"unknown parameter (this endpoint takes {takes})")
        if len(values) > 1:
            raise BadParameter(name, "given more than once")
    return {name: values[0] for name, values in query.items() if values and values[0] != ""}


# --- ordering ------------------------------------------------------------------------------------


def segment_order(dimension: str, segment: str) -> tuple[int, int, str]:
    """Tenure buckets in age order, other segments alphabetically, ``unknown`` last."""
    if segment == domain.UNKNOWN:
        return (2, 0, segment)
    if dimension == domain.TENURE and segment in domain.TENURE_BUCKETS:
        return (0, domain.TENURE_BUCKETS.index(segment), segment)
    return (1, 0, segment)


def _figure(record: Record) -> Record:
    return {
        "tickets": record["tickets"],
        "active_users": record["active_users"],
        "cci": record.get("cci"),
        "contact_rate_pct": record.get("contact_rate_pct"),
        "band": record.get("band"),
    }


def _is_empty(record: Record) -> bool:
    """A segment published with zeros once its last user moved elsewhere: not shown."""
    return not record["tickets"] and not record["active_users"]


# --- the view ------------------------------------------------------------------------------------


@dataclass
class DashboardView:
    """Both books, and every answer the dashboard's API and live stream give from them."""

    zone: ZoneInfo
    retain_months: int
    configured_dimensions: tuple[str, ...]  # in display order: all, plan, …, tenure, channel
    target: domain.TargetRange = domain.DEFAULT_TARGET_RANGE
    figures: LatestBook = field(default_factory=lambda: LatestBook(is_figure))
    alerts: LatestBook = field(default_factory=lambda: LatestBook(is_alert))

    @classmethod
    def from_settings(cls, settings: Settings) -> DashboardView:
        dimensions = (
            domain.ALL,
            *domain.user_dimensions(settings.extra_dimensions),
            domain.CHANNEL,
        )
        return cls(settings.zone, settings.retain_months, dimensions, settings.target_range)

    def target_range(self) -> Record:
        """The contact-rate target range and each band's guidance, for the page to show."""
        return {
            "low_pct": float(self.target.low),
            "high_pct": float(self.target.high),
            "guidance": self.target.guidance(),
        }

    # --- input

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> bool:
        """Apply a record of cci-updates or cci-alerts; True when what is shown may change."""
        if topic == TOPIC_UPDATES:
            return self.figures.apply(key, value)
        if topic == TOPIC_ALERTS:
            return self.alerts.apply(key, value)
        return False

    # --- shaping

    def oldest_month(self, now: datetime) -> int:
        return domain.oldest_retained_month(now, self.zone, self.retain_months)

    def forget_expired(self, now: datetime) -> bool:
        """Forget months past retention, so the books stay as small as the shown figures; True
        when something shown went."""
        oldest = domain.month_label(self.oldest_month(now))
        if oldest == self.figures.oldest_label:
            return False
        return self.figures.forget_months_before(oldest) | self.alerts.forget_months_before(oldest)

    def _retained(self, book: LatestBook, now: datetime) -> Iterable[Record]:
        oldest = self.oldest_month(now)
        return (r for r in book.records.values() if domain.month_from_label(r["month"]) >= oldest)

    def _shown_figures(self, now: datetime) -> list[Record]:
        return [r for r in self._retained(self.figures, now) if not _is_empty(r)]

    def dimensions(self, present: Iterable[str] = ()) -> list[str]:
        """The configured dimensions, then any others the data holds, alphabetically."""
        extra = sorted(set(present) - set(self.configured_dimensions))
        return [*self.configured_dimensions, *extra]

    def months(self, now: datetime) -> list[str]:
        """Retained months that have figures, oldest first."""
        return sorted({r["month"] for r in self._shown_figures(now)})

    def month_figures(self, month: str | None, dimension: str | None, now: datetime) -> Record:
        """Figures of ``month`` (default: the newest month in the data) per dimension."""
        shown = self._shown_figures(now)
        months = sorted({r["month"] for r in shown})
        newest = months[-1] if months else None
        month = month or newest
        by_dimension: dict[str, list[Record]] = {}
        for record in shown:
            if record["month"] == month and dimension in (None, record["dimension"]):
                by_dimension.setdefault(record["dimension"], []).append(record)
        if dimension is not None:
            by_dimension.setdefault(dimension, [])
        return {
            "month": month,
            "newest_month": newest,
            "months": months,
            "target_range": self.target_range(),
            "dimensions": {
                name: [
                    {
                        "segment": r["segment"],
                        **_figure(r),
                        "version": r["version"],
                        "emitted_at": r.get("emitted_at"),
                    }
                    for r in sorted(
                        by_dimension[name], key=lambda r: segment_order(name, r["segment"])
                    )
                ]
                for name in self.dimensions(by_dimension)
                if name in by_dimension
            },
        }

    def history(self, dimension: str | None, now: datetime) -> Record:
        """Per dimension and segment, the retained months with their figures, oldest first."""
        shown = [r for r in self._shown_figures(now) if dimension in (None, r["dimension"])]
        by_segment: dict[str, dict[str, list[Record]]] = {}
        for record in sorted(shown, key=lambda r: r["month"]):
            segments = by_segment.setdefault(record["dimension"], {})
            segments.setdefault(record["segment"], []).append(
                {"month": record["month"], **_figure(record)}
            )
        if dimension is not None:
            by_segment.setdefault(dimension, {})
        return {
            "months": sorted({r["month"] for r in self._shown_figures(now)}),
            "dimensions": {
                name: {
                    segment: by_segment[name][segment]
                    for segment in sorted(by_segment[name], key=lambda s: segment_order(name, s))
                }
                for name in self.dimensions(by_segment)
                if name in by_segment
            },
        }

    def alert_list(self, state: str, now: datetime) -> Record:
        """Alerts of the retained months in ``state`` (or all): newest month first."""
        order = {name: i for i, name in enumerate(self.dimensions())}
        chosen = [r for r in self._retained(self.alerts, now) if state in ("all", r["state"])]
        chosen.sort(
            key=lambda r: (
                -domain.month_from_label(r["month"]),
                order.get(r["dimension"], len(order)),
                r["dimension"],
                segment_order(r["dimension"], r["segment"]),
                r["rule"],
            )
        )
        return {"state": state, "alerts": chosen}

    def live(self, month: str | None, now: datetime) -> Record:
        """What the live stream pushes: a month's figures, the history and the firing alerts."""
        return {
            "cci": self.month_figures(month, None, now),
            "history": self.history(None, now),
            "alerts": self.alert_list(FIRING, now),
        }

    # --- the API, parameters included

    def parse_month(self, text: str, now: datetime) -> str:
        try:
            month = domain.month_from_label(text)
        except ValueError:
            raise BadParameter("month", f"expected YYYY-MM, got {text!r}") from None
        oldest = self.oldest_month(now)
        if month < oldest:
            raise BadParameter(
                "month",
                f"{text} is older than the retained months (the oldest is "
                f"{domain.month_label(oldest)}, CCI_RETAIN_MONTHS={self.retain_months})",
            )
        return domain.month_label(month)

    def parse_dimension(self, text: str) -> str:
        known = self.dimensions(r["dimension"] for r in self.figures.records.values())
        if text not in known:
            raise BadParameter(
                "dimension", f"unknown dimension {text!r} (one of {', '.join(known)})"
            )
        return text

    def api_cci(self, query: Query, now: datetime) -> Record:
        """``GET /api/cci?month=&dimension=``."""
        params = read_params(query, ("month", "dimension"))
        month = self.parse_month(params["month"], now) if "month" in params else None
        dimension = self.parse_dimension(params["dimension"]) if "dimension" in params else None
        return self.month_figures(month, dimension, now)

    def api_history(self, query: Query, now: datetime) -> Record:
        """``GET /api/cci/history?dimension=``."""
        params = read_params(query, ("dimension",))
        dimension = self.parse_dimension(params["dimension"]) if "dimension" in params else None
        return self.history(dimension, now)

    def api_alerts(self, query: Query, now: datetime) -> Record:
        """``GET /api/alerts?state=firing|cleared|all`` (default firing)."""
        params = read_params(query, ("state",))
        state = params.get("state", FIRING)
        if state not in ALERT_FILTERS:
            raise BadParameter(
                "state", f"expected one of {', '.join(ALERT_FILTERS)}, got {state!r}"
            )
        return self.alert_list(state, now)

    def stream_month(self, query: Query, now: datetime) -> str | None:
        """The month a live stream shows (``?month=``), or None to follow the newest."""
        params = read_params(query, ("month",))
        return self.parse_month(params["month"], now) if "month" in params else None


Change = list[Any]  # [path (keys and list indexes from the top), new value]


def live_changes(old: Any, new: Any, path: tuple[str | int, ...] = ()) -> list[Change]:
    """What turns ``old`` into ``new``, as ``[path, value]`` pairs the page applies in order.

    Objects that hold objects or lists, with the same keys in the same order, are compared key by
    key, lists of the same length item by item; anything else that differs (a segment's row, a
    list that grew, an object whose keys changed) is sent whole at its path, so the page's order
    stays the server's. A new ticket changes one row per dimension: those rows are what is
    sent."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict) and list(old) == list(new) and _nested(new):
        pairs: Iterable[tuple[str | int, Any, Any]] = ((k, old[k], v) for k, v in new.items())
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = ((i, a, b) for i, (a, b) in enumerate(zip(old, new, strict=True)))
    else:
        return [[list(path), new]]
    changes: list[Change] = []
    for key, before, after in pairs:
        changes += live_changes(before, after, (*path, key))
    return changes


def _nested(value: dict[str, Any]) -> bool:
    return any(isinstance(item, dict | list) for item in value.values())


def sse_event(event: str, payload: Any) -> bytes:
    """One server-sent event (orjson writes no newlines, so one ``data:`` line holds it)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
