"""``cci demo``: the whole pipeline on loopback, fed with live traffic, shown as a live table.

One process starts and stops everything it uses: the embedded broker, the topics, a ``cci worker``
child, a feeder producing synthetic traffic, and a reader of ``cci-updates`` whose newest figures
of the current month fill the table. The module reads top to bottom in that order:

* supervision — the broker, the worker child process, its health, stopping both;
* traffic     — the history (``generate``) and then live traffic at a steady rate;
* updates     — ``cci-updates`` records → table rows (pure), and the consumer that feeds them;
* rendering   — a ``rich`` live table on a terminal, a plain table every few seconds otherwise;
* run_demo    — the orchestration, signals and shutdown order.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import os
import random
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams import domain
from streams.dev.broker import (
    LOOPBACK,
    BrokerStartError,
    EmbeddedBroker,
    free_port,
    port_is_free,
)
from streams.dev.generate import Dataset, generate
from streams.dev.produce import Record, produce_records
from streams.dev.worker_process import WorkerProcess
from streams.kafka.admin import TopicCreationError, create_topics
from streams.kafka.embedded import ONE_RECORD_BATCH_BYTES
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    Settings,
)
from streams.topics import topic_catalogue

# The demo's broker keeps its data in memory, so its worker state and store start empty too:
# a directory of its own, cleared at every start (the default store, .cci/clickhouse, is untouched).
STATE_DIR = Path(".cci/demo")
WORKER_LOG = STATE_DIR / "worker.log"

WORKER_READY_TIMEOUT_S = 90.0
WORKER_STOP_GRACE_S = 20.0
HEALTH_POLL_S = 1.0
HEALTH_REQUEST_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 40

HISTORY_MONTHS = 3
HISTORY_SEED = 7
LIVE_SEED = 1_000_003
# Records in flight while loading the history, before waiting for their acknowledgements.
HISTORY_WINDOW = 1000
# A cohort's profiles go out this long before its events, so the worker's profile reader has them
# when the events are enriched (an event seen before its profile counts as segment "unknown").
PROFILE_LEAD_S = 2.0
# Keep this many seconds of live events generated ahead; a cohort is generated in one go.
LIVE_BUFFER_S = 4.0
COHORT_SECONDS = 2.0  # users per cohort = rate × this (each user yields ~1.4 events a month)
MIN_COHORT_USERS = 10
MAX_COHORT_USERS = 5000
FEED_TICK_S = 0.05
# After a stall (a slow cohort, a busy broker) send at most this much backlog at once.
MAX_BURST_S = 0.5

# SIGHUP too: the worker and the broker run in sessions of their own, so a closed terminal would
# not end them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

RATE_WINDOW_S = 5.0
LIVE_REFRESH_S = 0.5
PLAIN_REFRESH_S = 5.0


# --- supervision -----------------------------------------------------------------------------


def choose_web_port(preferred: int) -> int:
    """``preferred`` if it is free, else any free loopback port."""
    return preferred if port_is_free(preferred) else free_port()


# Settings the demo decides itself: everything on loopback against the embedded broker, in plain
# text, with the embedded store (the settings' defaults, spelled out).
DEMO_WORKER_SETTINGS = {
    "CCI_EMBEDDED_BROKER": "true",
    "CCI_WEB_HOST": LOOPBACK,
    "CCI_DATA_DIR": str(STATE_DIR / "data"),
    "CCI_CLICKHOUSE_URL": f"chdb://{STATE_DIR / 'clickhouse'}",
    "CCI_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
}
# Without CCI_ALERT_RULES the demo's worker alerts with these example rules (package data), so a
# new user sees alerts fire on the dashboard without writing a rules file.
DEMO_ALERT_RULES = Path(__file__).resolve().parent / "demo-alert-rules.toml"
_UNSET_FOR_DEMO = {
    "CCI_KAFKA_SASL_MECHANISM",
    "CCI_KAFKA_SASL_USERNAME",
    "CCI_KAFKA_SASL_PASSWORD",
    "CCI_KAFKA_SSL_CAFILE",
}


def worker_environment(
    settings: Settings, bootstrap: str, web_port: int, base: Mapping[str, str]
) -> dict[str, str]:
    """The worker's environment: the caller's pipeline settings, pointed at the loopback demo.

    ``CCI_*`` variables of ``base`` are dropped; every setting of ``settings`` (the environment
    with flags applied) that differs from its default is passed on, except those the demo decides
    (broker, web address, store, security). Without alert rules of the caller's, the demo's
    example rules (``DEMO_ALERT_RULES``).
    """
    env = {key: value for key, value in base.items() if not key.startswith("CCI_")}
    if settings.alert_rules.path is None:
        env["CCI_ALERT_RULES"] = str(DEMO_ALERT_RULES)
    for spec in fields(Settings):
        name = spec.metadata["env"]
        value = getattr(settings, spec.name)
        if name in DEMO_WORKER_SETTINGS or name in _UNSET_FOR_DEMO or value == spec.default:
            continue
        env[name] = _setting_text(value)
    env.update(DEMO_WORKER_SETTINGS)
    env.update(CCI_KAFKA_BOOTSTRAP=bootstrap, CCI_WEB_PORT=str(web_port))
    return env


def _setting_text(value: object) -> str:
    """A setting's value as its ``CCI_*`` variable spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


def health_status(port: int) -> int | None:
    """HTTP status of the worker's ``/health``, None when nothing answers."""
    url = f"http://{LOOPBACK}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_REQUEST_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def describe_health(status: int | None) -> str:
    if status == 200:
        return "ok"
    if status == 503:
        return "starting"
    return "no answer" if status is None else f"HTTP {status}"


def describe_exit(code: int | None) -> str:
    """``exited with code 1``, ``was killed by SIGKILL``: Popen's return code in words."""
    if code is None:
        return "not started"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# --- traffic ---------------------------------------------------------------------------------

TIME_FIELDS = {TOPIC_ACTIVITY: "occurred_at", TOPIC_TICKETS: "created_at"}


@dataclass
class TrafficCounters:
    """What the feeder has had acknowledged, for the header line."""

    history_total: int = 0
    history_sent: int = 0
    live_sent: int = 0
    live: bool = False  # the history is loaded; live traffic runs

    @property
    def events(self) -> int:
        return self.history_sent + self.live_sent


def user_key(value: bytes) -> bytes | None:
    """The record key the topics are partitioned by: the user_id."""
    user_id = orjson.loads(value).get("user_id")
    return user_id.encode() if isinstance(user_id, str) else None


def history_events(dataset: Dataset) -> Iterator[tuple[str, bytes]]:
    """Activity and tickets interleaved in proportion, so both fill the table as they load.

    Each list is in delivery order (month by month); merging by relative position keeps the two in
    step with each other.
    """

    def positioned(topic: str, values: list[bytes]) -> Iterator[tuple[float, str, bytes]]:
        return (((index + 1) / len(values), topic, value) for index, value in enumerate(values))

    merged = heapq.merge(
        positioned(TOPIC_ACTIVITY, dataset.activity),
        positioned(TOPIC_TICKETS, dataset.tickets),
        key=lambda entry: entry[0],
    )
    for _, topic, value in merged:
        yield topic, value


@dataclass
class Cohort:
    """Users the history did not cover, showing up now: profiles first, then their events."""

    profiles: list[Record]
    events: deque[tuple[str, dict[str, Any]]]
    ready_at: float = 0.0  # loop time after which its events may be sent


def cohort_users(rate: int) -> int:
    return max(MIN_COHORT_USERS, min(MAX_COHORT_USERS, math.ceil(rate * COHORT_SECONDS)))


def live_cohort(index: int, users: int, now: datetime, zone: ZoneInfo) -> Cohort:
    """One month of ``generate`` traffic for ``users`` fresh users, renamed to be unique.

    Users are renamed per cohort (their profiles go out with them) and tickets too, so every
    cohort adds customers and contacts; a cohort's resent and amended tickets keep sharing an id,
    so the worker still has duplicates to discard. The generator's mix carries over: free users
    write in more than paid ones, new customers more than long-time ones.
    """
    dataset = generate(users, 1, LIVE_SEED + index, now, zone)
    prefix = f"c{index:05d}"

    def rename(record: dict[str, Any]) -> dict[str, Any]:
        record["user_id"] = _prefixed(record["user_id"], "user-", prefix)
        if "ticket_id" in record:
            record["ticket_id"] = _prefixed(record["ticket_id"], "tkt-", prefix)
        return record

    profiles = [rename(orjson.loads(value)) for value in dataset.profiles]
    events = [(TOPIC_ACTIVITY, rename(orjson.loads(v))) for v in dataset.activity]
    events += [(TOPIC_TICKETS, rename(orjson.loads(v))) for v in dataset.tickets]
    random.Random(LIVE_SEED + index).shuffle(events)
    return Cohort(
        profiles=[(_key_of_record(p), orjson.dumps(p)) for p in profiles], events=deque(events)
    )


def _prefixed(identifier: str, stem: str, prefix: str) -> str:
    return f"{stem}{prefix}-{identifier.removeprefix(stem)}"


def _key_of_record(record: Mapping[str, Any]) -> bytes | None:
    user_id = record.get("user_id")
    return user_id.encode() if isinstance(user_id, str) else None


def retimed(topic: str, record: Mapping[str, Any], moment: datetime) -> Record:
    """The record as sent now: its event time is the moment it is produced."""
    stamp = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _key_of_record(record), orjson.dumps({**record, TIME_FIELDS[topic]: stamp})


class TrafficFeeder:
    """Produces the history's events as fast as the broker takes them, then live traffic."""

    def __init__(
        self,
        bootstrap: str,
        history: Dataset,
        rate: int,
        zone: ZoneInfo,
        counters: TrafficCounters,
    ) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.rate = rate
        self.zone = zone
        self.counters = counters
        counters.history_total = len(history.activity) + len(history.tickets)

    async def run(self) -> None:
        # One record per batch: the embedded broker misreports offsets of multi-record batches.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            max_batch_size=ONE_RECORD_BATCH_BYTES,
            linger_ms=0,
        )
        await producer.start()
        try:
            await self._history(producer)
            await self._live(producer)
        finally:
            await producer.stop()

    async def _history(self, producer: AIOKafkaProducer) -> None:
        pending: list[asyncio.Future[Any]] = []
        for topic, value in history_events(self.history):
            pending.append(await producer.send(topic, value=value, key=user_key(value)))
            if len(pending) >= HISTORY_WINDOW:
                self.counters.history_sent += len(await asyncio.gather(*pending))
                pending.clear()
        self.counters.history_sent += len(await asyncio.gather(*pending))

    async def _live(self, producer: AIOKafkaProducer) -> None:
        self.counters.live = True
        loop = asyncio.get_running_loop()
        cohorts: deque[Cohort] = deque()
        next_cohort = 0
        tokens = 0.0
        last = loop.time()
        while True:
            if sum(len(c.events) for c in cohorts) < self.rate * LIVE_BUFFER_S:
                cohort = await asyncio.to_thread(
                    live_cohort, next_cohort, cohort_users(self.rate), datetime.now(UTC), self.zone
                )
                next_cohort += 1
                await self._send_all(producer, TOPIC_PROFILES, cohort.profiles)
                cohort.ready_at = loop.time() + PROFILE_LEAD_S
                cohorts.append(cohort)
                continue
            await asyncio.sleep(FEED_TICK_S)
            now = loop.time()
            tokens = min(tokens + (now - last) * self.rate, self.rate * MAX_BURST_S)
            last = now
            batch: list[tuple[str, Record]] = []
            moment = datetime.now(UTC)
            while tokens >= 1 and cohorts and cohorts[0].ready_at <= now:
                head = cohorts[0]
                topic, record = head.events.popleft()
                if not head.events:
                    cohorts.popleft()
                batch.append((topic, retimed(topic, record, moment)))
                tokens -= 1
            if batch:
                self.counters.live_sent += await self._send_events(producer, batch)

    async def _send_events(
        self, producer: AIOKafkaProducer, batch: list[tuple[str, Record]]
    ) -> int:
        futures = [
            await producer.send(topic, value=value, key=key) for topic, (key, value) in batch
        ]
        return len(await asyncio.gather(*futures))

    async def _send_all(
        self, producer: AIOKafkaProducer, topic: str, records: Iterable[Record]
    ) -> None:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)


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
    """The newest ``cci-updates`` figures per key, and the table rows of one month."""

    # key → (version, month, row)
    latest: dict[str, tuple[int, str, CciRow]] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Keep the record if its version is the key's newest; ignore what cannot be read."""
        if key is None or value is None:
            return
        try:
            record = orjson.loads(value)
            text = key.decode("utf-8")
            version = int(record["version"])
            month = str(record["month"])
            row = CciRow(
                dimension=str(record["dimension"]),
                segment=str(record["segment"]),
                tickets=int(record["tickets"]),
                active_users=int(record["active_users"]),
                cci=record.get("cci"),
                contact_rate_pct=record.get("contact_rate_pct"),
            )
        except (orjson.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            return
        held = self.latest.get(text)
        if held is None or version > held[0]:
            self.latest[text] = (version, month, row)

    def rows(self, month: str, dimensions: Sequence[str]) -> list[CciRow]:
        """The month's segments, dimensions in ``dimensions`` order (others after), emptied
        segments (no tickets, no active users) left out."""
        order = {dimension: index for index, dimension in enumerate(dimensions)}
        rows = [
            row
            for _, row_month, row in self.latest.values()
            if row_month == month and (row.tickets or row.active_users)
        ]
        return sorted(
            rows,
            key=lambda row: (
                order.get(row.dimension, len(order)),
                row.dimension,
                _segment_rank(row.dimension, row.segment),
                row.segment,
            ),
        )


def _segment_rank(dimension: str, segment: str) -> int:
    # Tenure buckets read in time order; "unknown" comes last in every dimension.
    if segment == domain.UNKNOWN:
        return len(domain.TENURE_BUCKETS) + 1
    if dimension == domain.TENURE and segment in domain.TENURE_BUCKETS:
        return domain.TENURE_BUCKETS.index(segment)
    return 0


def table_dimensions(settings: Settings) -> tuple[str, ...]:
    """all, plan, product, region, the extra dimensions, tenure, channel."""
    return (domain.ALL, *domain.user_dimensions(settings.extra_dimensions), domain.CHANNEL)


async def read_updates(bootstrap: str, view: UpdatesView) -> None:
    """Follow every partition of ``cci-updates`` from the beginning into ``view``, forever."""
    # No consumer group: the demo's reader owns nothing and must see every partition.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions: set[int] = set()
        while not partitions:
            await consumer.topics()  # refreshes the metadata partitions_for_topic reads
            partitions = consumer.partitions_for_topic(TOPIC_UPDATES) or set()
            if not partitions:
                await asyncio.sleep(0.5)
        tps = [TopicPartition(TOPIC_UPDATES, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    view.apply(record.key, record.value)
    finally:
        await consumer.stop()


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
        caption=f"{waiting}Ctrl-C stops everything · worker log {WORKER_LOG}",
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


# --- run_demo --------------------------------------------------------------------------------


class DemoFailed(Exception):
    """Something the demo started failed; the message says what, for the user."""


class StopRequested(Exception):
    """Raised inside history generation to abandon it when the demo is asked to stop."""


def run_demo(settings: Settings, *, users: int, rate: int, run_for: float | None = None) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``run_for`` seconds after the start; the exit code.

    0 when stopped on request, 1 when a part failed (its reason printed). Either way every process
    it started has ended when it returns.
    """
    demo = Demo(settings, users=users, rate=rate, run_for=run_for, console=Console())
    return asyncio.run(demo.run())


class Demo:
    """One run of the demo: what it started, what it shows, and why it stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        users: int,
        rate: int,
        run_for: float | None,
        console: Console,
    ) -> None:
        self.settings = settings
        self.users = users
        self.rate = rate
        self.run_for = run_for
        self.console = console
        self.interactive = console.is_terminal
        self.stop_requested = asyncio.Event()
        # The same request, readable from worker threads (history generation checks it).
        self.stop_flag = threading.Event()
        self.failure: str | None = None
        self.broker: EmbeddedBroker | None = None
        self.worker: WorkerProcess | None = None
        self.counters = TrafficCounters()
        self.view = UpdatesView()
        self.health = "no answer"

    def request_stop(self) -> None:
        self.stop_flag.set()
        self.stop_requested.set()

    def say(self, message: str) -> None:
        # A closed terminal or pipe must not keep the demo from stopping what it started.
        with contextlib.suppress(OSError):
            if self.interactive:
                self.console.print(message, markup=False, highlight=False, soft_wrap=True)
            else:
                print(message, flush=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop)
        if self.run_for is not None:
            loop.call_later(self.run_for, self.request_stop)
        tasks: list[asyncio.Task[None]] = []
        try:
            if await self._start(tasks):
                await self._show()
        except DemoFailed as exc:
            self.failure = str(exc)
        except Exception as exc:
            # Whatever broke, the processes started so far are stopped below; say what it was.
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.say("stopping…")
            await self._stop(tasks)
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        if self.failure is not None:
            self.say(f"cci demo failed: {self.failure}")
            return 1
        self.say("stopped: nothing the demo started is left running")
        return 0

    async def _start(self, tasks: list[asyncio.Task[None]]) -> bool:
        """Broker, topics, history profiles, worker, then the feeder, reader and watcher tasks.

        False when a stop was requested on the way (what was started is stopped by the caller).
        """
        self.say("starting the embedded broker…")
        broker = EmbeddedBroker()
        self.broker = broker
        try:
            # In a thread, so a Ctrl-C meanwhile is noted; the start is never abandoned halfway.
            await asyncio.to_thread(broker.start)
        except BrokerStartError as exc:
            raise DemoFailed(str(exc)) from None
        pid = broker.process.pid if broker.process else None
        self.say(f"broker: {broker.bootstrap} (pid {pid})")
        try:
            if not await self._unless_stopped(
                create_topics(broker.bootstrap, topic_catalogue(self.settings))
            ):
                return False
        except TopicCreationError as exc:
            raise DemoFailed(f"creating the topics failed: {exc}") from None

        self.say(f"generating {self.users:,} users' traffic over {HISTORY_MONTHS} months…")
        try:
            history = await asyncio.to_thread(
                generate,
                self.users,
                HISTORY_MONTHS,
                HISTORY_SEED,
                datetime.now(UTC),
                self.settings.zone,
                progress=self._check_stop,
            )
        except StopRequested:
            return False
        # Profiles before the worker starts: it loads all of them before enriching any event.
        profiles = produce_records(
            broker.bootstrap,
            TOPIC_PROFILES,
            ((user_key(value), value) for value in history.profiles),
            one_record_batches=True,
        )
        if not await self._unless_stopped(profiles):
            return False

        web_port = choose_web_port(self.settings.web_port)
        if web_port != self.settings.web_port:
            self.say(
                f"port {self.settings.web_port} is busy: the worker's web server uses {web_port}"
            )
        env = worker_environment(self.settings, broker.bootstrap, web_port, os.environ)
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        STATE_DIR.mkdir(parents=True)
        worker = WorkerProcess(env, WORKER_LOG, port=web_port)
        self.worker = worker
        worker.start()
        self.say(f"worker: pid {worker.pid}, web http://{LOOPBACK}:{web_port}/, log {WORKER_LOG}")
        self.say(f"live dashboard: http://{LOOPBACK}:{web_port}/dashboard")
        if self.settings.alert_rules.path is None:
            self.say(
                f"alerts: the example rules in {DEMO_ALERT_RULES} "
                "(CCI_ALERT_RULES=your-rules.toml for your own; docs/alerts.md)"
            )
        # The demo's store is its own (see STATE_DIR): analysts name it to query it meanwhile.
        self.say(
            f"query it meanwhile: CCI_CLICKHOUSE_URL={DEMO_WORKER_SETTINGS['CCI_CLICKHOUSE_URL']}"
            + ("" if web_port == 6066 else f" CCI_WEB_PORT={web_port}")
            + " .venv/bin/cci report"
        )
        if not await self._wait_healthy(worker):
            return False

        feeder = TrafficFeeder(
            broker.bootstrap, history, self.rate, self.settings.zone, self.counters
        )
        reader = read_updates(broker.bootstrap, self.view)
        tasks.append(asyncio.create_task(self._guard("feeder", feeder.run()), name="feeder"))
        tasks.append(asyncio.create_task(self._guard("reader", reader), name="reader"))
        tasks.append(asyncio.create_task(self._watch(worker, broker), name="watch"))
        return True

    def _check_stop(self, _users_done: int) -> None:
        # Called by generate() every thousand users, in its thread: the way to interrupt it.
        if self.stop_flag.is_set():
            raise StopRequested

    async def _unless_stopped(self, work: Coroutine[Any, Any, Any]) -> bool:
        """Run ``work`` unless a stop comes first (then cancel it); True when it completed."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()  # raises what the work raised
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    async def _wait_healthy(self, worker: WorkerProcess) -> bool:
        """True once /health answers 200; False if a stop came first; DemoFailed otherwise."""
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        message = "waiting for the worker to be healthy…"
        spinner = self.console.status(message) if self.interactive else None
        if spinner is None:
            self.say(message)
        with spinner or contextlib.nullcontext():
            while not self.stop_requested.is_set():
                code = worker.exited()
                if code is not None:
                    raise DemoFailed(
                        f"the worker {describe_exit(code)} while starting; "
                        f"the end of {WORKER_LOG}:\n{worker.log_tail(LOG_TAIL_LINES)}"
                    )
                status = await asyncio.to_thread(health_status, worker.port)
                self.health = describe_health(status)
                if status == 200:
                    self.say("worker healthy: loading the history, then live traffic")
                    return True
                if time.monotonic() > deadline:
                    raise DemoFailed(
                        f"the worker was not healthy within {WORKER_READY_TIMEOUT_S:.0f} s "
                        f"(/health: {self.health}); the end of {WORKER_LOG}:\n"
                        f"{worker.log_tail(LOG_TAIL_LINES)}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_requested.wait(), HEALTH_POLL_S)
        return False

    async def _guard(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run a background part; its failure stops the demo with a reason."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(f"the {name} failed: {type(exc).__name__}: {exc}")

    async def _watch(self, worker: WorkerProcess, broker: EmbeddedBroker) -> None:
        """Poll the worker's health for the header; a process that dies ends the demo."""
        while True:
            code = worker.exited()
            if code is not None:
                self.fail(
                    f"the worker {describe_exit(code)}; the end of {WORKER_LOG}:\n"
                    f"{worker.log_tail(LOG_TAIL_LINES)}"
                )
                return
            if not broker.running:
                self.fail(f"the broker exited; its output ends with:\n{broker.log_tail()}")
                return
            self.health = describe_health(await asyncio.to_thread(health_status, worker.port))
            await asyncio.sleep(HEALTH_POLL_S)

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.request_stop()

    def _header(self, meter: RateMeter) -> Header:
        port = self.worker.port if self.worker else self.settings.web_port
        return Header(
            month=domain.month_label(domain.month_of(datetime.now(UTC), self.settings.zone)),
            timezone=self.settings.timezone,
            counters=self.counters,
            events_per_s=meter.rate(time.monotonic(), self.counters.events),
            health=self.health,
            dashboard_url=f"http://{LOOPBACK}:{port}/",
        )

    def _rows(self, header: Header) -> list[CciRow]:
        return self.view.rows(header.month, table_dimensions(self.settings))

    async def _show(self) -> None:
        meter = RateMeter()
        # A first sample now, so the first figure shown is already a rate.
        meter.rate(time.monotonic(), self.counters.events)
        if self.interactive:
            header = self._header(meter)
            with Live(
                rich_view(header, self._rows(header)),
                console=self.console,
                auto_refresh=False,
            ) as live:
                while not self.stop_requested.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_requested.wait(), LIVE_REFRESH_S)
                    header = self._header(meter)
                    live.update(rich_view(header, self._rows(header)), refresh=True)
            return
        while not self.stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), PLAIN_REFRESH_S)
            header = self._header(meter)
            print(plain_view(header, self._rows(header)), flush=True)

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """Feeder and reader first, then the worker (it needs the broker to leave cleanly), then
        the broker."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.worker is not None and self.worker.process is not None:
            code = await asyncio.to_thread(self.worker.stop, WORKER_STOP_GRACE_S)
            self.say(f"worker stopped (pid {self.worker.pid}, {describe_exit(code)})")
        if self.broker is not None and self.broker.process is not None:
            pid = self.broker.process.pid
            code = await asyncio.to_thread(self.broker.stop)
            self.say(f"broker stopped (pid {pid}, {describe_exit(code)})")
