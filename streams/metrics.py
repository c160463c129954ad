"""Prometheus metrics of the worker (served at ``GET /metrics``)."""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from collections.abc import Collection, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("streams")

registry = CollectorRegistry()

events_consumed = Counter(
    "cci_events_consumed_total", "Input records consumed", ["topic"], registry=registry
)
dead_letters = Counter(
    "cci_dead_letters_total",
    "Input records sent to the dead-letter topic",
    ["reason"],
    registry=registry,
)
inactive_activities = Counter(
    "cci_inactive_activities_total",
    "Valid activities whose type does not make a user active (CCI_ACTIVE_ACTIVITIES)",
    registry=registry,
)
repeat_facts = Counter(
    "cci_repeat_facts_total",
    "Facts that changed nothing: resent events, duplicates, later activity of an active user",
    ["kind"],
    registry=registry,
)
invalid_profiles = Counter(
    "cci_invalid_profiles_total", "Profiles that failed validation", ["reason"], registry=registry
)
partials_published = Counter(
    "cci_partials_published_total", "Partial-count records published", registry=registry
)
stale_partials = Counter(
    "cci_stale_partials_total",
    "Partial counts ignored because a newer one for the same partition was already applied",
    registry=registry,
)
updates_emitted = Counter(
    "cci_updates_emitted_total", "Records emitted to cci-updates", registry=registry
)
user_months = Gauge(
    "cci_user_months", "Distinct active user-months held in dedup state", registry=registry
)
standby_user_months = Gauge(
    "cci_standby_user_months",
    "Distinct active user-months held as standby copies of other workers' partitions",
    registry=registry,
)
dedup_state_bytes = Gauge(
    "cci_dedup_state_bytes",
    "Estimated memory of the dedup state's winners (user-months and tickets), in bytes",
    registry=registry,
)
current_cci = Gauge(
    "cci_current",
    "Latest CCI per month, dimension and segment (at most SEGMENT_SERIES_LIMIT segments per "
    "month and dimension)",
    ["month", "dimension", "segment"],
    registry=registry,
)
current_cci_dropped = Counter(
    "cci_current_dropped_total",
    "Figure updates not exported as cci_current: their dimension already had "
    "SEGMENT_SERIES_LIMIT segment series that month (the figures themselves are not affected)",
    ["dimension"],
    registry=registry,
)

# Segment values are data: 20,000 regions would be 20,000 series per month in every scrape.
# The first SEGMENT_SERIES_LIMIT segments of a dimension in a month get a series; the others are
# counted in cci_current_dropped_total and logged once per month and dimension. The figures of
# every segment are in cci-updates, ClickHouse and the dashboard whatever this limit says.
SEGMENT_SERIES_LIMIT = 100


class SeriesGuard:
    """Which (month, dimension, segment) series may exist: at most ``limit`` segments per month
    and dimension, first come first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._segments: dict[tuple[str, str], set[str]] = {}

    def admit(self, month: str, dimension: str, segment: str) -> bool:
        held = self._segments.setdefault((month, dimension), set())
        if segment in held:
            return True
        if len(held) >= self.limit:
            return False
        held.add(segment)
        return True

    def forget(self, month: str, dimension: str, segment: str) -> None:
        held = self._segments.get((month, dimension))
        if held is not None:
            held.discard(segment)
            if not held:
                del self._segments[(month, dimension)]


_UNPRINTABLE = frozenset({"Cc", "Zl", "Zp"})  # control characters, line and paragraph separators


def label_value(value: str) -> str:
    """A label value from data, with no control character in it. The exposition format escapes
    only ``\\``, ``"`` and newline; a NUL, a carriage return or U+2028 went out raw (Prometheus
    takes them, but they garble the page for people and line-based tools). Each becomes
    ``\\xNN`` or ``\\uNNNN``, and a backslash ``\\\\``, so two values never become one series."""
    if "\\" not in value and not any(unicodedata.category(c) in _UNPRINTABLE for c in value):
        return value
    return "".join(_escaped(c) for c in value)


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if unicodedata.category(char) not in _UNPRINTABLE:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_current_guard = SeriesGuard(SEGMENT_SERIES_LIMIT)
_guard_warned: set[tuple[str, str]] = set()


def set_current_cci(month: str, dimension: str, segment: str, value: float) -> None:
    """``cci_current`` of a figure, within the segment series limit."""
    if _current_guard.admit(month, dimension, segment):
        current_cci.labels(month, label_value(dimension), label_value(segment)).set(value)
        return
    current_cci_dropped.labels(label_value(dimension)).inc()
    if (month, dimension) not in _guard_warned:
        _guard_warned.add((month, dimension))
        log.warning(
            "cci_current: %s has more than %d segments in %s; further segments are not exported "
            "as metrics (counted in cci_current_dropped_total; the figures are unaffected)",
            dimension,
            SEGMENT_SERIES_LIMIT,
            month,
        )


def forget_current_cci(month: str, dimension: str, segment: str) -> None:
    """Drop a figure's ``cci_current`` series (its month left retention)."""
    _current_guard.forget(month, dimension, segment)
    _guard_warned.discard((month, dimension))
    with contextlib.suppress(KeyError):  # a dropped segment never had one
        current_cci.remove(month, label_value(dimension), label_value(segment))


state_rebuilds = Counter(
    "cci_state_rebuilds_total",
    "Table partitions rebuilt from their changelog because the state had read past its end",
    ["topic"],
    registry=registry,
)
stream_rereads = Counter(
    "cci_stream_rereads_total",
    "Stream partitions read again from their commit after it stopped moving with records past it",
    ["topic"],
    registry=registry,
)
producer_buffer_records = Gauge(
    "cci_producer_buffer_records",
    "Records the worker sent that the broker has not yet acknowledged (Faust's buffer included)",
    registry=registry,
)
producer_oldest_pending_seconds = Gauge(
    "cci_producer_oldest_pending_seconds",
    "Age of the oldest record the broker has not yet acknowledged; 0 when none waits",
    registry=registry,
)

# --- ClickHouse sink (streams/sink/) -------------------------------------------------------------
sink_rows_written = Counter(
    "cci_sink_rows_written_total",
    "Rows ClickHouse confirmed, per table",
    ["table"],
    registry=registry,
)
sink_batches = Counter(
    "cci_sink_batches_total", "Batches written to ClickHouse and then committed", registry=registry
)
sink_retries = Counter(
    "cci_sink_retries_total",
    "ClickHouse inserts that failed and were retried after a back-off, per table",
    ["table"],
    registry=registry,
)
sink_lag_records = Gauge(
    "cci_sink_lag_records",
    "Records of a topic the sink has not yet confirmed in ClickHouse (end offset - confirmed)",
    ["topic"],
    registry=registry,
)
sink_lag_seconds = Gauge(
    "cci_sink_lag_seconds",
    "Age of the oldest record waiting for ClickHouse; 0 when nothing waits",
    registry=registry,
)
sink_skipped_records = Counter(
    "cci_sink_skipped_records_total",
    "Records of the sink's topics it could not read (logged as errors), per topic",
    ["topic"],
    registry=registry,
)
sink_store_rebuilds = Counter(
    "cci_sink_store_rebuilds_total",
    "Partitions the sink re-read because the store held less than the committed offsets "
    "(tables lost or restored from an old backup), per topic",
    ["topic"],
    registry=registry,
)
broker_up = Gauge(
    "cci_broker_up",
    "1 while the Kafka broker answers the worker's probe (streams/kafka/broker_watch.py), else 0",
    registry=registry,
)
consumer_lag = Gauge(
    "cci_consumer_lag_records",
    "Input records not yet read by this worker's ingest (high watermark - position), per topic",
    ["topic"],
    registry=registry,
)
first_event_consumed = Gauge(
    "cci_first_event_consumed_timestamp_seconds",
    "Unix time at which the running ingest process first received input records (0 before)",
    registry=registry,
)

segment_guard_acted = Counter(
    "cci_segment_guard_acted_total",
    "Times the cardinality guard started folding a dimension's values of a month and facts"
    " partition into segment `other` (CCI_MAX_SEGMENT_VALUES)",
    ["dimension"],
    registry=registry,
)
ingest_restarts = Counter(
    "cci_ingest_restarts_total",
    "Times ingest failed and restarted from its committed offsets (in the ingest process)",
    registry=registry,
)
ingest_stalled = Gauge(
    "cci_ingest_stalled",
    "1 while ingest cannot make progress (failing without committing, or its process is down);"
    " /health then answers 503 with the reason",
    registry=registry,
)

live_streams_refused = Counter(
    "cci_live_streams_refused_total",
    "Dashboard live streams (/api/stream) refused: `worker` beyond CCI_LIVE_STREAMS (503), "
    "`client` beyond CCI_LIVE_STREAMS_PER_CLIENT from one address (429)",
    ["cap"],
    registry=registry,
)

# --- alerts (streams/worker/alert_publisher.py) ---------------------------------------------------
alerts_emitted = Counter(
    "cci_alerts_emitted_total",
    "Records emitted to cci-alerts, per rule and state (firing, cleared)",
    ["rule", "state"],
    registry=registry,
)

# --- the ingest process (streams/worker/ingest_process.py) ----------------------------------------
# Counted in the ingest child process; it sends their values, and the worker serves them here.
INGEST_METRICS: tuple[Counter | Gauge, ...] = (
    events_consumed,
    dead_letters,
    inactive_activities,
    invalid_profiles,
    consumer_lag,
    ingest_restarts,
    first_event_consumed,
)

# (index in INGEST_METRICS, label values) → value
Snapshot = dict[tuple[int, tuple[str, ...]], float]


def snapshot(metrics: tuple[Counter | Gauge, ...]) -> Snapshot:
    """The current value of every labelled child of ``metrics``."""
    values: Snapshot = {}
    for index, metric in enumerate(metrics):
        for family in metric.collect():
            for sample in family.samples:
                # A counter's value is its ``_total`` sample; ``_created`` is a timestamp.
                if sample.name.endswith("_created"):
                    continue
                values[(index, tuple(sample.labels.values()))] = sample.value
    return values


def apply_snapshot(
    metrics: tuple[Counter | Gauge, ...],
    previous: Snapshot,
    current: Snapshot,
    *,
    skip: Collection[Counter | Gauge] = (),
) -> None:
    """Bring ``metrics`` forward by what one process counted between two of its snapshots:
    counters by the difference (they keep counting across restarts of that process), gauges to
    the value; the metrics in ``skip`` are left alone."""
    for (index, labels), value in current.items():
        metric = metrics[index]
        if metric in skip:
            continue
        child = metric.labels(*labels) if labels else metric
        if isinstance(metric, Counter):
            child.inc(max(0.0, value - previous.get((index, labels), 0.0)))
        else:
            child.set(value)


def combine_gauges(
    metrics: tuple[Counter | Gauge, ...],
    snapshots: Iterable[Snapshot],
    earliest: Collection[Gauge] = (),
) -> None:
    """Set the gauges of ``metrics`` from several processes' latest snapshots: the sum (each
    process has its own share, e.g. of the partitions), or for a timestamp in ``earliest`` the
    earliest one set. Counters are left alone (``apply_snapshot``)."""
    values: dict[tuple[int, tuple[str, ...]], list[float]] = {}
    for snapshot in snapshots:
        for key, value in snapshot.items():
            if isinstance(metrics[key[0]], Gauge):
                values.setdefault(key, []).append(value)
    for (index, labels), found in values.items():
        metric = metrics[index]
        child = metric.labels(*labels) if labels else metric
        if metric in earliest:
            child.set(min((v for v in found if v > 0), default=0.0))
        else:
            child.set(sum(found))
