"""``cci bench``: one run, start to finish, on a fresh embedded broker.

The phases run one after the other, so none measures another's CPU use:

1. **data** — ``streams.dev.generate`` traffic cut to N events, and its batch recount (the expected
   figures every result is checked against);
2. **load** — a fresh broker, every topic created up front with configs (the peer's output too),
   profiles produced one record per batch (the worker reads them to their end offsets), activity
   and tickets batched, all keyed by ``user_id``;
3. **ceiling** — one aiokafka consumer in a group fetching and parsing every input record;
4. **peer** — ``streams/bench/peers/quix_cci.py`` in its own process until its output equals the
   recount; then it is stopped;
5. **pipeline** — one ``cci worker`` until ``cci-updates`` equals the recount, then until its
   ClickHouse store does; its gauges from ``GET /metrics``;
6. **latency** — the same worker fed new events at the offered rate (see ``LATENCY_DEFINITION``
   in ``streams/bench/report.py``), then checked against the recount of everything.

The worker's and the peer's state, logs and store are in ``.cci/bench/`` (cleared at every start,
kept afterwards). Everything the run starts is stopped on the way out, on Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import children, domain
from streams.bench.measure import (
    EMPTY,
    Figure,
    FigureHistory,
    FigureKey,
    describe_difference,
    memory_of,
    metric_values,
    per_second,
    percentile,
    ratio,
    visibility_latencies,
)
from streams.bench.report import BenchReport, CeilingRun, LatencyRun, PeerRun, PipelineRun, RunInfo
from streams.bench.traffic import LatencyEvent, cut_to, due_events, latency_events, users_for_events
from streams.dev.broker import EmbeddedBroker, terminate_group
from streams.dev.demo import DEMO_ALERT_RULES
from streams.dev.generate import generate
from streams.dev.produce import key_of, produce_records
from streams.dev.worker_process import WorkerProcess, worker_environment
from streams.kafka.admin import TopicSpec, create_topics
from streams.pipeline.recount import recount
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    Settings,
)
from streams.store.query import QueryError, run_query
from streams.topics import topic_catalogue

STATE_DIR = Path(".cci/bench")
REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "quix_cci.py"
PEER_NAME = "Quix Streams"
PEER_OUTPUT_TOPIC = "cci-bench-peer-updates"
CEILING_GROUP = "cci-bench-ceiling"
CEILING_MAX_RECORDS = 10_000
SAMPLE_USERS = 2000  # generated first to learn how many events a user makes
START_TIMEOUT_S = 180.0  # for a process's first event (the first group join alone takes ~7 s)
STALL_TIMEOUT_S = 120.0  # an output that stops changing short of the recount for this long fails
METRICS_POLL_S = 0.1
STORE_POLL_S = 0.5
READ_TIMEOUT_MS = 500
PACE_TICK_S = 0.002
STORE_SQL = (
    "SELECT formatDateTime(month, '%Y-%m'), dimension, segment, tickets, active_users "
    "FROM cci_segment_monthly FINAL"
)

Say = Callable[[str], None]
Figures = dict[FigureKey, Figure]


class BenchFailed(RuntimeError):
    """A part of the bench could not run (a process died or never started)."""


class BenchUsageError(ValueError):
    """A flag's value cannot work (found out only once the data was generated)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class BenchOptions:
    events: int = 1_000_000
    users: int | None = None  # None: as many as make ``events``
    months: int = 3
    offered_rate: float = 10_000
    latency_seconds: float = 20.0
    seed: int = 1
    skip_peer: bool = False
    skip_latency: bool = False


@dataclass
class Workload:
    activity: list[bytes]
    tickets: list[bytes]
    profiles: list[bytes]
    users: int
    now: datetime
    expected: Figures
    user_months: int

    @property
    def events(self) -> int:
        return len(self.activity) + len(self.tickets)


# --- data ----------------------------------------------------------------------------------------


def prepare_workload(settings: Settings, options: BenchOptions, say: Say) -> Workload:
    now = datetime.now(UTC)
    users = options.users
    if users is None:
        sample = generate(SAMPLE_USERS, options.months, options.seed, now, settings.zone)
        users = users_for_events(
            options.events, SAMPLE_USERS, len(sample.activity) + len(sample.tickets)
        )
    say(f"generating {users:,} users' traffic over {options.months} months…")
    data = generate(users, options.months, options.seed, now, settings.zone)
    try:
        activity, tickets = cut_to(data.activity, data.tickets, options.events)
    except ValueError:
        made = len(data.activity) + len(data.tickets)
        raise BenchUsageError(
            "--users",
            f"{users:,} users make only {made:,} events over {options.months} months, fewer than "
            f"--events {options.events:,}; raise --users or leave it out",
        ) from None
    say(f"recounting {len(activity) + len(tickets):,} events (the expected figures)…")
    result = recount(activity, tickets, data.profiles, now, settings)
    return Workload(
        activity, tickets, data.profiles, users, now, result.figures, result.active_user_months
    )


def bench_topics(settings: Settings) -> dict[str, TopicSpec]:
    """The pipeline's topics and the peer's output, all with explicit configs (the embedded
    broker reports none for a topic created without)."""
    topics = topic_catalogue(settings)
    topics[PEER_OUTPUT_TOPIC] = topics[TOPIC_UPDATES]
    return topics


async def load_inputs(bootstrap: str, workload: Workload) -> None:
    await produce_records(
        bootstrap,
        TOPIC_PROFILES,
        ((key_of(value), value) for value in workload.profiles),
        one_record_batches=True,
    )
    for topic, values in ((TOPIC_ACTIVITY, workload.activity), (TOPIC_TICKETS, workload.tickets)):
        await produce_records(
            bootstrap, topic, ((key_of(value), value) for value in values), one_record_batches=False
        )


# --- ceiling -------------------------------------------------------------------------------------


async def consume_ceiling(bootstrap: str, total: int, settings: Settings) -> CeilingRun:
    """Seconds for one aiokafka consumer in a group to fetch and parse every input record, from
    its first batch (the group join is not counted) to its last record."""
    consumer = AIOKafkaConsumer(
        TOPIC_ACTIVITY,
        TOPIC_TICKETS,
        bootstrap_servers=bootstrap,
        group_id=CEILING_GROUP,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout * 1000),
        heartbeat_interval_ms=int(min(3.0, settings.session_timeout / 3) * 1000),
    )
    await consumer.start()
    try:
        seen = 0
        started: float | None = None
        last_progress = time.monotonic()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=CEILING_MAX_RECORDS)
            if batches:
                started = started or time.perf_counter()
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > START_TIMEOUT_S:
                raise BenchFailed(f"the ceiling consumer read {seen:,} of {total:,} records")
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        seconds = time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
    return CeilingRun(seconds=seconds, events_per_s=per_second(total, seconds))


# --- reading outputs -----------------------------------------------------------------------------

Decoder = Callable[[bytes | None, bytes | None], Iterable[tuple[FigureKey, Figure]]]


def decode_update(key: bytes | None, value: bytes | None) -> list[tuple[FigureKey, Figure]]:
    """A ``cci-updates`` record."""
    if value is None:
        return []
    u = orjson.loads(value)
    return [((u["month"], u["dimension"], u["segment"]), (u["tickets"], u["active_users"]))]


def decode_peer(key: bytes | None, value: bytes | None) -> list[tuple[FigureKey, Figure]]:
    """A peer output record: ``{"month", "figures": [[dimension, segment, tickets, users], …]}``."""
    if value is None:
        return []
    document = orjson.loads(value)
    month = document["month"]
    return [((month, d, s), (t, u)) for d, s, t, u in document["figures"]]


class OutputTail:
    """Follows an output topic from its beginning (no group), folding it into a FigureHistory;
    the publications of ``watch``ed keys are also kept in order, with their timestamps."""

    def __init__(self, bootstrap: str, topic: str, decode: Decoder) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.decode = decode
        self.history = FigureHistory()
        self.watched: dict[FigureKey, list[tuple[int, Figure]]] = {}
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    def watch(self, key: FigureKey) -> None:
        self.watched[key] = []

    async def read(self) -> int:
        """Fold what arrived (waiting up to READ_TIMEOUT_MS); the number of records read."""
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=READ_TIMEOUT_MS, max_records=50_000)
        count = 0
        for records in batches.values():
            for record in records:
                for key, figure in self.decode(record.key, record.value):
                    self.history.apply(key, figure, record.timestamp)
                    if key in self.watched:
                        self.watched[key].append((record.timestamp, figure))
            count += len(records)
        return count


@dataclass
class Settled:
    exact: bool
    at_ms: int | None  # when the output first held the expected figures
    difference: list[str]


async def wait_settled(
    tail: OutputTail, expected: Figures, problem: Callable[[], str | None]
) -> Settled:
    """Read until the output's figures equal ``expected``; give up when the producing process
    has a ``problem`` or the output stops changing for STALL_TIMEOUT_S."""
    last_change = time.monotonic()
    while True:
        if await tail.read():
            last_change = time.monotonic()
        figures = tail.history.figures()
        if figures == expected:
            return Settled(True, tail.history.settled_at(), [])
        trouble = problem()
        if trouble is None and time.monotonic() - last_change > STALL_TIMEOUT_S:
            trouble = f"its output stopped changing for {STALL_TIMEOUT_S:.0f} s"
        if trouble is not None:
            return Settled(False, None, [trouble, *describe_difference(expected, figures)])


# --- peer ----------------------------------------------------------------------------------------


def _status_lines(path: Path) -> dict[str, dict[str, object]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {entry["event"]: entry for entry in map(json.loads, filter(None, lines))}


async def run_peer(
    bootstrap: str, env: dict[str, str], workload: Workload, stack: contextlib.ExitStack, say: Say
) -> PeerRun:
    status_path = STATE_DIR / "peer-status.jsonl"
    log_path = STATE_DIR / "peer.log"
    command = [
        sys.executable,
        str(PEER_SCRIPT),
        "--output-topic",
        PEER_OUTPUT_TOPIC,
        "--state-dir",
        str(STATE_DIR / "peer-state"),
        "--status-file",
        str(status_path),
    ]
    with log_path.open("wb") as log:
        process = children.popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(terminate_group, process)
    say(f"peer ({PEER_NAME}): pid {process.pid}, log {log_path}; waiting for its first event…")

    def problem() -> str | None:
        code = process.poll()
        return None if code is None else f"the peer exited with {code}:\n{_tail(log_path)}"

    deadline = time.monotonic() + START_TIMEOUT_S
    while "first_message" not in (status := _status_lines(status_path)):
        if (trouble := problem()) is not None:
            raise BenchFailed(trouble)
        if time.monotonic() > deadline:
            raise BenchFailed(f"the peer consumed nothing in {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(METRICS_POLL_S)
    first_ms = int(float(str(status["first_message"]["at"])) * 1000)
    start_rss = status.get("ready", {}).get("rss_bytes")
    async with OutputTail(bootstrap, PEER_OUTPUT_TOPIC, decode_peer) as tail:
        settled = await wait_settled(tail, workload.expected, problem)
    memory = memory_of(process.pid)
    terminate_group(process)  # before the worker starts: the machine is the worker's alone
    run = PeerRun(name=PEER_NAME, exact=settled.exact, difference=settled.difference)
    run.peak_rss_bytes = memory.peak_rss_bytes
    run.start_rss_bytes = start_rss if isinstance(start_rss, int) else None
    if settled.at_ms is not None:
        run.seconds = (settled.at_ms - first_ms) / 1000
        run.events_per_s = per_second(workload.events, run.seconds)
    if memory.rss_bytes is not None and run.start_rss_bytes is not None:
        run.rss_growth_bytes_per_user_month = ratio(
            memory.rss_bytes - run.start_rss_bytes, workload.user_months
        )
    say(_summary(f"peer ({PEER_NAME})", run.exact, run.events_per_s, run.seconds))
    return run


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _summary(what: str, exact: bool, events_per_s: float | None, seconds: float | None) -> str:
    if not exact:
        return f"{what}: differs from the recount"
    return f"{what}: exact, {events_per_s or 0:,.0f} events/s ({seconds or 0:.2f} s)"


# --- pipeline ------------------------------------------------------------------------------------


async def first_event_ms(worker: WorkerProcess) -> int:
    """When the worker first counted an input event (cci_events_consumed_total > 0)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        code = worker.exited()
        if code is not None:
            raise BenchFailed(f"the worker exited with {code}:\n{worker.log_tail()}")
        try:
            page = await asyncio.to_thread(worker.get, "/metrics")
        except OSError:
            page = ""  # not listening yet
        if metric_values(page, ["cci_events_consumed_total"])["cci_events_consumed_total"]:
            return int(time.time() * 1000)
        await asyncio.sleep(METRICS_POLL_S)
    raise BenchFailed(f"the worker consumed nothing in {START_TIMEOUT_S:.0f} s")


async def wait_store(store: Settings, expected: Figures) -> Settled:
    """Poll the worker's ClickHouse store until ``cci_segment_monthly FINAL`` equals
    ``expected``; give up after STALL_TIMEOUT_S."""
    deadline = time.monotonic() + STALL_TIMEOUT_S
    figures: Figures = {}
    error = ""
    while time.monotonic() < deadline:
        try:
            result = await asyncio.to_thread(run_query, store, STORE_SQL)
        except QueryError as exc:
            error = str(exc)
        else:
            figures = {
                (str(m), str(d), str(s)): (int(t), int(u))
                for m, d, s, t, u in result.rows
                if int(t) or int(u)
            }
            if figures == expected:
                return Settled(True, int(time.time() * 1000), [])
        await asyncio.sleep(STORE_POLL_S)
    reason = f"ClickHouse did not hold the figures within {STALL_TIMEOUT_S:.0f} s {error}".strip()
    return Settled(False, None, [reason, *describe_difference(expected, figures)])


async def run_pipeline(
    bootstrap: str,
    env: dict[str, str],
    settings: Settings,
    workload: Workload,
    options: BenchOptions,
    stack: contextlib.ExitStack,
    say: Say,
) -> tuple[PipelineRun, LatencyRun | None]:
    worker = WorkerProcess(env, STATE_DIR / "worker.log")
    stack.callback(worker.stop)
    worker.start()
    say(f"worker: pid {worker.pid}, log {worker.log_path}; waiting for its first event…")
    first_ms = await first_event_ms(worker)
    start_rss = memory_of(worker.pid or 0, with_children=True).rss_bytes

    def problem() -> str | None:
        code = worker.exited()
        return None if code is None else f"the worker exited with {code}:\n{worker.log_tail()}"

    latency: LatencyRun | None = None
    async with OutputTail(bootstrap, TOPIC_UPDATES, decode_update) as tail:
        settled = await wait_settled(tail, workload.expected, problem)
        run = PipelineRun(exact=settled.exact, difference=settled.difference)
        run.start_rss_bytes = start_rss
        now_rss = memory_of(worker.pid or 0, with_children=True).rss_bytes
        if now_rss is not None and start_rss is not None:
            run.rss_growth_bytes_per_user_month = ratio(now_rss - start_rss, workload.user_months)
        if settled.at_ms is not None:
            run.seconds = (settled.at_ms - first_ms) / 1000
            run.events_per_s = per_second(workload.events, run.seconds)
        say(_summary("pipeline → cci-updates", run.exact, run.events_per_s, run.seconds))
        if settled.exact:
            store = settings.with_overrides(
                web_port=worker.port, clickhouse_url=env["CCI_CLICKHOUSE_URL"]
            )
            stored = await wait_store(store, workload.expected)
            run.clickhouse_exact = stored.exact
            run.difference += stored.difference
            if stored.at_ms is not None:
                run.clickhouse_seconds = (stored.at_ms - first_ms) / 1000
                run.clickhouse_events_per_s = per_second(workload.events, run.clickhouse_seconds)
            say(
                _summary(
                    "pipeline → ClickHouse",
                    stored.exact,
                    run.clickhouse_events_per_s,
                    run.clickhouse_seconds,
                )
            )
            gauges = metric_values(
                await asyncio.to_thread(worker.get, "/metrics"),
                ["cci_user_months", "cci_dedup_state_bytes"],
            )
            run.user_months_gauge = gauges["cci_user_months"]
            run.dedup_state_bytes_gauge = gauges["cci_dedup_state_bytes"]
            run.state_bytes_per_user_month = ratio(
                run.dedup_state_bytes_gauge, run.user_months_gauge
            )
            if not options.skip_latency:
                latency = await run_latency(
                    bootstrap, tail, settings, workload, options, problem, say
                )
        run.peak_rss_bytes = memory_of(worker.pid or 0, with_children=True).peak_rss_bytes
    worker.stop()
    return run, latency


# --- latency -------------------------------------------------------------------------------------


async def produce_paced(
    bootstrap: str, events: list[LatencyEvent], rate: float
) -> tuple[list[int], float]:
    """Produce ``events`` at ``rate`` per second; each one's produce timestamp (ms, also its
    record timestamp) and the seconds the whole took."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    produced = [0] * len(events)
    pending: list[asyncio.Future[object]] = []
    try:
        started = time.monotonic()
        sent = 0
        while sent < len(events):
            due = due_events(rate, time.monotonic() - started, len(events))
            if due <= sent:
                await asyncio.sleep(PACE_TICK_S)
                continue
            stamp = int(time.time() * 1000)
            for index in range(sent, due):
                event = events[index]
                pending.append(
                    await producer.send(
                        event.topic, value=event.value, key=event.key, timestamp_ms=stamp
                    )
                )
                produced[index] = stamp
            sent = due
        seconds = time.monotonic() - started
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return produced, seconds


async def run_latency(
    bootstrap: str,
    tail: OutputTail,
    settings: Settings,
    workload: Workload,
    options: BenchOptions,
    problem: Callable[[], str | None],
    say: Say,
) -> LatencyRun:
    moment = datetime.now(UTC)
    key = (domain.month_label(domain.month_of(moment, settings.zone)), domain.ALL, domain.ALL)
    count = max(1, round(options.offered_rate * options.latency_seconds))
    activity_type = settings.active_activities[0] if settings.active_activities else "login"
    events = latency_events(count, len(workload.tickets) / workload.events, moment, activity_type)
    say(f"latency phase: recounting with its {count:,} events first…")
    expected = await asyncio.to_thread(
        lambda: (
            recount(
                workload.activity + [e.value for e in events if not e.is_ticket],
                workload.tickets + [e.value for e in events if e.is_ticket],
                workload.profiles,
                moment,
                settings,
            ).figures
        )
    )
    base_tickets, base_users = tail.history.latest.get(key, EMPTY)
    tail.watch(key)
    say(f"latency phase: {count:,} events at {options.offered_rate:,.0f}/s…")
    produced_ms, seconds = await produce_paced(bootstrap, events, options.offered_rate)
    settled = await wait_settled(tail, expected, problem)
    published = tail.watched[key]
    latencies = visibility_latencies(
        [ms for ms, e in zip(produced_ms, events, strict=True) if not e.is_ticket],
        [(ts, figure[1]) for ts, figure in published],
        base_users,
    ) + visibility_latencies(
        [ms for ms, e in zip(produced_ms, events, strict=True) if e.is_ticket],
        [(ts, figure[0]) for ts, figure in published],
        base_tickets,
    )
    visible = [float(ms) for ms in latencies if ms is not None]
    tenth = max(1, len(visible) // 10)
    run = LatencyRun(
        offered_rate=options.offered_rate,
        achieved_rate=per_second(count, seconds),
        produce_seconds=seconds,
        events=count,
        visible=len(visible),
        sustained_events_per_s=(
            per_second(count, (settled.at_ms - produced_ms[0]) / 1000) if settled.at_ms else None
        ),
        p50_ms=percentile(visible, 50),
        p95_ms=percentile(visible, 95),
        p99_ms=percentile(visible, 99),
        max_ms=max(visible, default=None),
        exact=settled.exact,
        difference=settled.difference,
        first_tenth_p50_ms=percentile(visible[:tenth], 50),
        last_tenth_p50_ms=percentile(visible[-tenth:], 50),
    )
    say(
        f"latency: p50 {run.p50_ms} ms, p95 {run.p95_ms} ms, p99 {run.p99_ms} ms "
        f"({run.visible:,} of {count:,} visible)"
    )
    return run


# --- the whole run -------------------------------------------------------------------------------


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def process_environment(
    settings: Settings, bootstrap: str, state_dir: Path = STATE_DIR
) -> dict[str, str]:
    """The worker's (and the peer's) environment: the caller's pipeline settings, on the bench's
    broker, with state and store in ``state_dir`` (``cci soak`` passes its own)."""
    state = state_dir.resolve()
    return worker_environment(
        bootstrap,
        data_dir=state / "data",
        clickhouse_url=f"chdb://{state / 'clickhouse'}",
        settings=settings,
        web_port=settings.web_port,
        default_alert_rules=DEMO_ALERT_RULES,
    )


def run_bench(settings: Settings, options: BenchOptions, say: Say) -> BenchReport:
    """One whole run; raises BenchUsageError for a flag that cannot work, BenchFailed when a part
    could not run. Results that differ from the recount are in the report, not raised."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    workload = prepare_workload(settings, options, say)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    STATE_DIR.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        say("starting the embedded broker…")
        broker = stack.enter_context(EmbeddedBroker())
        say(f"broker: {broker.bootstrap} (pid {broker.process.pid if broker.process else '?'})")
        asyncio.run(create_topics(broker.bootstrap, bench_topics(settings)))
        say(f"loading {workload.events:,} events and {len(workload.profiles):,} profiles…")
        asyncio.run(load_inputs(broker.bootstrap, workload))
        ceiling = asyncio.run(consume_ceiling(broker.bootstrap, workload.events, settings))
        say(f"consume ceiling: {ceiling.events_per_s or 0:,.0f} events/s ({ceiling.seconds:.2f} s)")
        env = process_environment(settings, broker.bootstrap)
        peer = None
        if not options.skip_peer:
            peer = asyncio.run(run_peer(broker.bootstrap, env, workload, stack, say))
        pipeline, latency = asyncio.run(
            run_pipeline(broker.bootstrap, env, settings, workload, options, stack, say)
        )
        broker_memory = memory_of(broker.process.pid if broker.process else 0)
    return BenchReport(
        run=RunInfo(
            started_at=started_at,
            commit=_commit(),
            events=workload.events,
            activity_events=len(workload.activity),
            ticket_events=len(workload.tickets),
            users=workload.users,
            months=options.months,
            partitions=settings.partitions,
            figures=len(workload.expected),
            user_months=workload.user_months,
            emit_interval_s=settings.emit_interval,
            cpus=os.cpu_count(),
            load_average_1m=load,
        ),
        ceiling=ceiling,
        pipeline=pipeline,
        peer=peer,
        latency=latency,
        broker_peak_rss_bytes=broker_memory.peak_rss_bytes,
        bench_peak_rss_bytes=memory_of("self").peak_rss_bytes,
    )
