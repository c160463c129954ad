"""The figures of one ``cci bench`` run: a table for the terminal, JSON for comparing runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.bench.measure import ratio

SCHEMA_VERSION = 2  # 2: ``peers`` (a list) instead of ``peer``; first output; ratios per peer
LATENCY_DEFINITION = (
    "After the throughput phases the bench produces events at the offered rate for the latency "
    "phase's duration. Each event is a new user's activity (one more active user) or a new "
    "ticket, all timed in the current month, so each raises one counter of that month's all|all "
    "figure by exactly one. Activity event k and ticket event k (each counted in produce order) "
    "are visible at the timestamp of the first cci-updates record of {month}|all|all whose "
    "active_users (tickets) reaches its value before the phase + k. Latency = that record's "
    "timestamp (when the worker sent it) - the event's produce timestamp, both Kafka record "
    "timestamps in ms from one clock. Percentiles are nearest-rank over every event of the phase."
)
THROUGHPUT_DEFINITION = (
    "events/s = input events / seconds from the first input event the process consumed (worker: "
    "cci_first_event_consumed_timestamp_seconds, when its ingest process first received input "
    "records; peer: its first record) to the timestamp of the last output record that changed a "
    "figure, once the output equals the batch recount. "
    "ClickHouse: to the first poll (every 0.5 s) at which cci_segment_monthly FINAL equals it. "
    "Ceiling: one aiokafka consumer in a group, getmany(max_records=10000) + orjson.loads of every "
    "input record, from its first batch to its last record."
)
FIRST_OUTPUT_DEFINITION = (
    "first output = seconds from the first input event the process consumed to the earliest "
    "timestamp of its output records carrying figures, with the whole backlog waiting: when a "
    "user first sees a figure. Both are read from the host's one clock: the worker's ingest "
    "process stamps its first input (cci_first_event_consumed_timestamp_seconds), the worker "
    "stamps its output records (Kafka CreateTime)."
)
RATIO_DEFINITION = (
    "Ratios are pipeline / peer of one run: events/s (above 1: the pipeline is faster), first "
    "output and peak RSS (below 1: the pipeline is quicker, smaller). A peer whose output differs "
    "from the recount gets no ratio and no rank."
)


@dataclass
class RunInfo:
    started_at: str
    commit: str | None
    events: int
    activity_events: int
    ticket_events: int
    users: int
    months: int
    partitions: int
    figures: int
    user_months: int
    emit_interval_s: float
    cpus: int | None
    load_average_1m: float | None


@dataclass
class CeilingRun:
    seconds: float
    events_per_s: float | None


@dataclass
class PipelineRun:
    exact: bool
    seconds: float | None = None
    events_per_s: float | None = None
    clickhouse_exact: bool | None = None
    clickhouse_seconds: float | None = None
    clickhouse_events_per_s: float | None = None
    first_output_seconds: float | None = None
    start_rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    rss_growth_bytes_per_user_month: float | None = None
    # The worker's own gauges (GET /metrics); None when it does not expose them.
    user_months_gauge: float | None = None
    dedup_state_bytes_gauge: float | None = None
    state_bytes_per_user_month: float | None = None
    difference: list[str] = field(default_factory=list)


@dataclass
class PeerRun:
    name: str
    exact: bool
    seconds: float | None = None
    events_per_s: float | None = None
    first_output_seconds: float | None = None
    start_rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    rss_growth_bytes_per_user_month: float | None = None
    difference: list[str] = field(default_factory=list)


@dataclass
class LatencyRun:
    offered_rate: float
    achieved_rate: float | None
    produce_seconds: float
    events: int
    visible: int
    # Events / seconds from the phase's first event to its settled output (the last event's
    # latency included, so a little below the offered rate even when the pipeline keeps up).
    sustained_events_per_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    exact: bool
    difference: list[str] = field(default_factory=list)
    # p50 of the first and of the last tenth of the events, in produce order: a pipeline that
    # keeps up has about the same latency at the end as at the start; one that does not queues.
    first_tenth_p50_ms: float | None = None
    last_tenth_p50_ms: float | None = None

    @property
    def falling_behind(self) -> bool:
        first, last = self.first_tenth_p50_ms, self.last_tenth_p50_ms
        return first is not None and last is not None and last > 2 * first + 200


@dataclass
class PeerRatios:
    """Pipeline / peer of one run; None where either side has no figure."""

    events_per_s: float | None
    first_output: float | None
    peak_rss: float | None


def peer_ratios(pipeline: PipelineRun, peer: PeerRun) -> PeerRatios | None:
    """None for a peer whose output differs from the recount: its speed is not comparable."""
    if not peer.exact:
        return None
    return PeerRatios(
        events_per_s=ratio(pipeline.events_per_s, peer.events_per_s),
        first_output=ratio(pipeline.first_output_seconds, peer.first_output_seconds),
        peak_rss=ratio(pipeline.peak_rss_bytes, peer.peak_rss_bytes),
    )


def ranking(peers: list[PeerRun]) -> list[PeerRun]:
    """The exact peers, fastest first; a peer without a speed is not ranked."""
    ranked = [peer for peer in peers if peer.exact and peer.events_per_s is not None]
    return sorted(ranked, key=lambda peer: -(peer.events_per_s or 0))


@dataclass
class BenchReport:
    run: RunInfo
    ceiling: CeilingRun
    pipeline: PipelineRun
    peers: list[PeerRun] = field(default_factory=list)
    latency: LatencyRun | None = None
    broker_peak_rss_bytes: int | None = None
    bench_peak_rss_bytes: int | None = None

    @property
    def exact(self) -> bool:
        """Every result checked equals the batch recount."""
        return (
            self.pipeline.exact
            and self.pipeline.clickhouse_exact is not False
            and all(peer.exact for peer in self.peers)
            and (self.latency is None or self.latency.exact)
        )

    def ratios(self) -> dict[str, Any]:
        fastest = ranking(self.peers)[:1]
        return {
            "pipeline_vs_ceiling": ratio(self.pipeline.events_per_s, self.ceiling.events_per_s),
            "pipeline_vs_fastest_peer": (
                ratio(self.pipeline.events_per_s, fastest[0].events_per_s) if fastest else None
            ),
            "fastest_peer": fastest[0].name if fastest else None,
            "peers": {
                peer.name: (None if (r := peer_ratios(self.pipeline, peer)) is None else asdict(r))
                for peer in self.peers
            },
        }


def exit_status(report: BenchReport) -> int:
    """0 when every result equals the recount, 1 otherwise."""
    return 0 if report.exact else 1


def report_json(report: BenchReport) -> str:
    document: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "exact": report.exact,
        **asdict(report),
        "ratios": report.ratios(),
        "definitions": {
            "throughput": THROUGHPUT_DEFINITION,
            "first_output": FIRST_OUTPUT_DEFINITION,
            "ratios": RATIO_DEFINITION,
            "latency": LATENCY_DEFINITION,
        },
    }
    return json.dumps(document, indent=1)


# --- the terminal table --------------------------------------------------------------------------


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def render_table(report: BenchReport) -> str:
    lines = _run_header(report.run)
    lines += _measurement_rows(report)
    lines += _peer_comparison(report)
    lines.append(_state_per_user_month(report))
    if report.latency is not None:
        lines += _latency_lines(report.latency)
    lines += _differences(report)
    lines.append("exact: " + ("every result equals the batch recount" if report.exact else "NO"))
    return "\n".join(lines)


def _run_header(run: RunInfo) -> list[str]:
    return [
        f"cci bench: {run.events:,} events ({run.activity_events:,} activity, "
        f"{run.ticket_events:,} tickets), {run.users:,} users, {run.months} months, "
        f"{run.partitions} partitions; {run.figures:,} figures, {run.user_months:,} user-months",
        f"machine: {run.cpus or '?'} CPUs, load {run.load_average_1m or 0:.2f} at start; "
        f"commit {run.commit or 'unknown'}; preliminary on a shared machine",
        "",
    ]


def _measurement_rows(report: BenchReport) -> list[str]:
    """The aligned table: one row per measured process, right-aligned figures."""
    pipeline = report.pipeline
    rows = [("", "events/s", "seconds", "first output", "exact", "peak RSS")]
    rows.append(
        (
            "consume ceiling",
            _count(report.ceiling.events_per_s),
            _seconds(report.ceiling.seconds),
            "-",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "pipeline → cci-updates",
            _count(pipeline.events_per_s),
            _seconds(pipeline.seconds),
            _seconds(pipeline.first_output_seconds),
            _yes(pipeline.exact),
            _mib(pipeline.peak_rss_bytes),
        )
    )
    rows.append(
        (
            "pipeline → ClickHouse",
            _count(pipeline.clickhouse_events_per_s),
            _seconds(pipeline.clickhouse_seconds),
            "",
            _yes(pipeline.clickhouse_exact),
            "",
        )
    )
    for peer in report.peers:
        rows.append(
            (
                f"peer: {peer.name}",
                _count(peer.events_per_s),
                _seconds(peer.seconds),
                _seconds(peer.first_output_seconds),
                _yes(peer.exact),
                _mib(peer.peak_rss_bytes),
            )
        )
    rows.append(("broker (Tansu)", "", "", "", "", _mib(report.broker_peak_rss_bytes)))
    rows.append(("bench itself", "", "", "", "", _mib(report.bench_peak_rss_bytes)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines: list[str] = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _peer_comparison(report: BenchReport) -> list[str]:
    """The ceiling ratio, then each peer's ratios and rank (or why it is not ranked)."""
    ratios = report.ratios()
    lines = ["", f"pipeline/ceiling {_ratio(ratios['pipeline_vs_ceiling'])}"]
    if report.peers:
        lines.append(
            "pipeline / peer (events/s: above 1 the pipeline is faster; first output, peak RSS: "
            "below 1 it is quicker, smaller):"
        )
    rank = {peer.name: place for place, peer in enumerate(ranking(report.peers), start=1)}
    for peer in report.peers:
        ratio_of = peer_ratios(report.pipeline, peer)
        if ratio_of is None:
            lines.append(f"  {peer.name}: output differs from the recount, not ranked")
            continue
        lines.append(
            f"  {peer.name} (#{rank[peer.name]} of the peers): events/s "
            f"{_ratio(ratio_of.events_per_s)}, first output {_ratio(ratio_of.first_output)}, "
            f"peak RSS {_ratio(ratio_of.peak_rss)}"
            if peer.name in rank
            else f"  {peer.name}: no speed measured, not ranked"
        )
    return lines


def _state_per_user_month(report: BenchReport) -> str:
    pipeline = report.pipeline
    return (
        "state per user-month: "
        f"cci_dedup_state_bytes {_count(pipeline.state_bytes_per_user_month)} B "
        f"(gauges: {_count(pipeline.user_months_gauge)} user-months, "
        f"{_count(pipeline.dedup_state_bytes_gauge)} bytes); RSS growth: worker "
        f"{_count(pipeline.rss_growth_bytes_per_user_month)} B"
        + "".join(
            f", {peer.name} {_count(peer.rss_growth_bytes_per_user_month)} B"
            for peer in report.peers
        )
    )


def _latency_lines(latency: LatencyRun) -> list[str]:
    return [
        f"latency at {latency.offered_rate:,.0f} events/s offered "
        f"({_count(latency.achieved_rate)} achieved), {latency.events:,} events: "
        f"p50 {_ms(latency.p50_ms)}, p95 {_ms(latency.p95_ms)}, p99 {_ms(latency.p99_ms)}, "
        f"max {_ms(latency.max_ms)}; {latency.visible:,} visible; exact {_yes(latency.exact)}",
        f"  the pipeline sustained {_count(latency.sustained_events_per_s)} events/s in the "
        f"latency phase; p50 of the first tenth {_ms(latency.first_tenth_p50_ms)}, of the last "
        f"{_ms(latency.last_tenth_p50_ms)}"
        + (" (growing: the pipeline fell behind, queueing)" if latency.falling_behind else ""),
    ]


def _differences(report: BenchReport) -> list[str]:
    """Each result that differs from the batch recount, with its differing lines indented."""
    latency = report.latency
    lines: list[str] = []
    for name, difference in (
        ("pipeline", report.pipeline.difference),
        *((f"peer {peer.name}", peer.difference) for peer in report.peers),
        ("latency phase", latency.difference if latency else []),
    ):
        if difference:
            lines.append(f"{name} differs from the recount:")
            lines += [f"  {line}" for line in difference]
    return lines
