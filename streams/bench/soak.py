"""``cci soak``: one ``cci worker`` living through simulated calendar months, its memory per month.

``cci bench`` sees three months of wall-clock-now data, so retention (``CCI_RETAIN_MONTHS``,
counted back from *now*) never expires anything there. Here the worker's wall clock is moved
forward a month at a time (``streams/bench/clock/sitecustomize.py``: real time plus an offset read
from a file; no production code knows), and each simulated month gets its own traffic:

1. the clock file is set to the 28th, 12:00 UTC, of month ``m``;
2. every one of ``--users`` users (the same population each month) is active once in month ``m``
   and about ``--tickets-per-user`` tickets per user are created, event times on days 2–27 (in
   month ``m`` whatever ``CCI_TIMEZONE``, and never in the clock's future);
3. once ``cci-updates`` has month ``m``'s ``all|all`` figure, the dedup state holds the expected
   user-months (``min(m, retain) × users``: the months before the retention window expired), the
   sink has written everything and the input lag is 0, the worker's RSS and state gauges are read.

RSS is expected to stop growing once the state holds ``retain`` months; ``flatness`` compares it
there with the end. Dead letters are counted too: any at all would mean the simulated clock and
the events disagree. State, log and store are in ``.cci/soak/`` (cleared at every start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from streams import domain
from streams.bench.measure import memory_of, metric_values
from streams.bench.run import (
    STALL_TIMEOUT_S,
    START_TIMEOUT_S,
    BenchFailed,
    BenchUsageError,
    OutputTail,
    decode_update,
    process_environment,
)
from streams.dev.broker import EmbeddedBroker
from streams.dev.generate import PLANS, PRODUCTS, REGIONS
from streams.dev.produce import key_of, produce_records
from streams.dev.worker_process import WorkerProcess, WorkerStartError
from streams.kafka.admin import create_topics
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, TOPIC_UPDATES, Settings
from streams.store.query import QueryError, run_query
from streams.topics import topic_catalogue

STATE_DIR = Path(".cci/soak")
CLOCK_DIR = Path(__file__).resolve().parent / "clock"  # holds the worker's sitecustomize.py
CLOCK_FILE_ENV = "CCI_SOAK_CLOCK_FILE"  # read by clock/sitecustomize.py
CLOCK_DAY = 28  # the simulated "now" in each month: the 28th, 12:00 UTC
FIRST_EVENT_DAY, LAST_EVENT_DAY = 2, 27  # event times fall on these days (UTC), both included
# The worker re-reads the clock file every 0.2 s; producing only after this long makes sure
# ingest judges the month's events against the month's clock.
CLOCK_SETTLE_S = 0.6
SAMPLE_SETTLE_S = 1.0  # after the month is processed: let timers and the sink go quiet
POLL_S = 0.2
FLAT_TOLERANCE_PCT = 5.0  # RSS growth after retention is full that still counts as flat
MIB = 1024 * 1024
# Memory the embedded ClickHouse engine (in the worker's process) accounts for itself: what of
# the RSS is the store's rather than the pipeline's Python objects.
STORE_MEMORY_SQL = "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"
GAUGES = (
    "cci_user_months",
    "cci_dedup_state_bytes",
    "cci_consumer_lag_records",
    "cci_sink_lag_records",
    "cci_dead_letters_total",
    "cci_updates_emitted_total",
)

Say = Callable[[str], None]


@dataclass(frozen=True)
class SoakOptions:
    months: int = 12
    retain_months: int = 3
    users: int = 20_000
    tickets_per_user: float = 0.2
    seed: int = 1


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


# --- pure helpers --------------------------------------------------------------------------------


def month_of_index(start_month: int, index: int) -> int:
    """Simulated month ``index`` (1 = ``start_month``) as a month number (domain.month_of)."""
    return start_month + index - 1


def month_moment(month: int, day: int, hour: int = 0) -> datetime:
    """``day`` of ``month`` at ``hour``:00 UTC."""
    first = domain.month_start(month)
    return datetime(first.year, first.month, day, hour, tzinfo=UTC)


def clock_moment(month: int) -> datetime:
    """The simulated "now" while ``month``'s traffic is produced and processed."""
    return month_moment(month, CLOCK_DAY, 12)


def clock_offset_seconds(target: datetime, real_now: datetime) -> float:
    """What the clock file holds so that real time plus it is ``target``."""
    return (target - real_now).total_seconds()


def expected_user_months(index: int, retain_months: int, users: int) -> int:
    """User-months the dedup state holds after month ``index``: the retention window's."""
    return min(index, retain_months) * users


def user_id(number: int) -> str:
    return f"soak-user-{number:07d}"


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def profile_records(users: int, signup: datetime, seed: int) -> list[bytes]:
    """One profile per user, segments drawn with the generator's weights."""
    rng = random.Random(seed)

    def pick(pairs: Sequence[tuple[str, float]]) -> str:
        return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]

    stamp = _timestamp(signup)
    return [
        orjson.dumps(
            {
                "user_id": user_id(n),
                "signup_at": stamp,
                "segments": {
                    "plan": pick(PLANS),
                    "product": pick(PRODUCTS),
                    "region": pick(REGIONS),
                },
                "updated_at": stamp,
            }
        )
        for n in range(users)
    ]


@dataclass(frozen=True)
class MonthTraffic:
    activity: list[bytes]
    tickets: list[bytes]

    @property
    def events(self) -> int:
        return len(self.activity) + len(self.tickets)


def month_traffic(
    month: int, users: int, tickets_per_user: float, seed: int, activity_type: str = "login"
) -> MonthTraffic:
    """Every user active once in ``month``; ``round(users × tickets_per_user)`` tickets, each by
    a user drawn at random (ids unique per month). Event times on days 2–27, UTC."""
    rng = random.Random(seed * 1_000_003 + month)
    start = month_moment(month, FIRST_EVENT_DAY)
    span_ms = int((month_moment(month, LAST_EVENT_DAY + 1) - start) / timedelta(milliseconds=1))

    def moment() -> str:
        return _timestamp(start + timedelta(milliseconds=rng.randrange(span_ms)))

    activity = [
        orjson.dumps({"user_id": user_id(n), "occurred_at": moment(), "activity": activity_type})
        for n in range(users)
    ]
    label = domain.month_label(month)
    tickets = [
        orjson.dumps(
            {
                "ticket_id": f"soak-{label}-{k:07d}",
                "user_id": user_id(rng.randrange(users)),
                "created_at": moment(),
                "channel": rng.choice(("web", "email", "chat", "phone")),
            }
        )
        for k in range(round(users * tickets_per_user))
    ]
    return MonthTraffic(activity, tickets)


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


def _mib(value: float | None) -> str:
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
            f"{s.expected_user_months:>9,}  {_mib(s.state_bytes):>9}  {_mib(s.rss_bytes):>8}  "
            f"{_mib(s.store_bytes):>9}  {s.seconds:>7.1f}"
        )
    lines.append("")
    f = report.flatness
    if f is None:
        lines.append("RSS after retention is full: not enough months to tell")
    else:
        verdict = "flat" if f.flat else f"NOT flat (over {FLAT_TOLERANCE_PCT:g} %)"
        lines.append(
            f"RSS after retention is full: {_mib(f.rss_from_bytes)} MiB ({f.from_month}) → "
            f"{_mib(f.rss_to_bytes)} MiB ({f.to_month}): {f.growth_bytes / MIB:+,.1f} MiB "
            f"({f.growth_pct:+.1f} %), slope {f.slope_bytes_per_month / MIB:+,.2f} MiB/month "
            f"({f.late_slope_bytes_per_month / MIB:+,.2f} over the later half): {verdict}"
        )
    lines.append(
        f"dead letters: {report.dead_letters}; worker peak RSS {_mib(report.worker_peak_rss_bytes)}"
        f" MiB; log {report.worker_log}"
    )
    return "\n".join(lines)


def report_json(report: SoakReport) -> str:
    document = asdict(report)
    document["flat_tolerance_pct"] = FLAT_TOLERANCE_PCT
    return json.dumps(document, indent=2)


# --- the run -------------------------------------------------------------------------------------


def write_clock(path: Path, target: datetime) -> None:
    """Point the worker's clock at ``target`` (atomically: it never reads a half-written file)."""
    staged = path.with_suffix(".new")
    staged.write_text(f"{clock_offset_seconds(target, datetime.now(UTC)):.6f}\n")
    staged.replace(path)


async def _gauges(worker: WorkerProcess) -> dict[str, float | None]:
    try:
        page = await asyncio.to_thread(worker.get, "/metrics")
    except OSError:
        return dict.fromkeys(GAUGES)
    return metric_values(page, GAUGES)


async def _wait_month(
    worker: WorkerProcess,
    tail: OutputTail,
    key: tuple[str, str, str],
    figure: tuple[int, int],
    user_months: int,
) -> dict[str, float | None]:
    """Until the month is processed (see the module's docstring); the gauges then."""
    last_change = time.monotonic()
    while True:
        code = worker.exited()
        if code is not None:
            raise BenchFailed(f"the worker exited with {code}:\n{worker.log_tail()}")
        if await tail.read():
            last_change = time.monotonic()
        gauges = await _gauges(worker)
        if (
            tail.history.latest.get(key) == figure
            and gauges["cci_user_months"] == user_months
            and not gauges["cci_consumer_lag_records"]
            and not gauges["cci_sink_lag_records"]
        ):
            return gauges
        if time.monotonic() - last_change > STALL_TIMEOUT_S:
            raise BenchFailed(
                f"month {key[0]} not processed within {STALL_TIMEOUT_S:.0f} s of the last "
                f"update: {key} is {tail.history.latest.get(key)}, expected {figure}; "
                f"user-months {gauges['cci_user_months']}, expected {user_months}\n"
                f"{worker.diagnostics()}"
            )
        await asyncio.sleep(POLL_S)


def _store_memory(store: Settings) -> int | None:
    try:
        rows = run_query(store, STORE_MEMORY_SQL).rows
    except QueryError:
        return None
    return int(rows[0][0]) if rows else None


def _sample(
    index: int,
    month: str,
    events: int,
    expected: int,
    gauges: dict[str, float | None],
    pid: int,
    store_bytes: int | None,
) -> MonthSample:
    def whole(name: str) -> int | None:
        value = gauges.get(name)
        return None if value is None else int(value)

    return MonthSample(
        index=index,
        month=month,
        events=events,
        expected_user_months=expected,
        user_months=whole("cci_user_months"),
        state_bytes=whole("cci_dedup_state_bytes"),
        rss_bytes=memory_of(pid, with_children=True).rss_bytes,
        store_bytes=store_bytes,
        seconds=0.0,
    )


async def _run_months(
    bootstrap: str,
    worker: WorkerProcess,
    clock_path: Path,
    settings: Settings,
    options: SoakOptions,
    start_month: int,
    report: SoakReport,
    say: Say,
) -> None:
    if worker.pid is None:
        raise BenchFailed("the worker was not started")
    pid = worker.pid
    store = settings.with_overrides(
        web_port=worker.port, clickhouse_url=worker.env["CCI_CLICKHOUSE_URL"]
    )
    activity_type = settings.active_activities[0] if settings.active_activities else "login"
    async with OutputTail(bootstrap, TOPIC_UPDATES, decode_update) as tail:
        gauges = await _gauges(worker)
        store_bytes = await asyncio.to_thread(_store_memory, store)
        report.samples.append(_sample(0, "start", 0, 0, gauges, pid, store_bytes))
        for index in range(1, options.months + 1):
            month = month_of_index(start_month, index)
            label = domain.month_label(month)
            write_clock(clock_path, clock_moment(month))
            traffic = await asyncio.to_thread(
                month_traffic,
                month,
                options.users,
                options.tickets_per_user,
                options.seed,
                activity_type,
            )
            await asyncio.sleep(CLOCK_SETTLE_S)
            started = time.monotonic()
            for topic, values in (
                (TOPIC_ACTIVITY, traffic.activity),
                (TOPIC_TICKETS, traffic.tickets),
            ):
                await produce_records(
                    bootstrap,
                    topic,
                    ((key_of(value), value) for value in values),
                    one_record_batches=False,
                )
            expected = expected_user_months(index, options.retain_months, options.users)
            await _wait_month(
                worker,
                tail,
                (label, domain.ALL, domain.ALL),
                (len(traffic.tickets), options.users),
                expected,
            )
            seconds = time.monotonic() - started
            await asyncio.sleep(SAMPLE_SETTLE_S)
            gauges = await _gauges(worker)
            store_bytes = await asyncio.to_thread(_store_memory, store)
            sample = _sample(index, label, traffic.events, expected, gauges, pid, store_bytes)
            sample = replace(sample, seconds=seconds)
            report.samples.append(sample)
            report.dead_letters = int(gauges["cci_dead_letters_total"] or 0)
            say(
                f"{label}: {traffic.events:,} events in {seconds:.1f} s; user-months "
                f"{sample.user_months:,}; state {_mib(sample.state_bytes)} MiB; "
                f"RSS {_mib(sample.rss_bytes)} MiB (store {_mib(sample.store_bytes)} MiB)"
            )


def run_soak(settings: Settings, options: SoakOptions, say: Say) -> SoakReport:
    """One whole run; raises BenchUsageError for options that cannot work, BenchFailed when a part
    could not run."""
    if options.months <= options.retain_months:
        raise BenchUsageError(
            "--months",
            f"{options.months} months do not go past --retain-months {options.retain_months}: "
            "nothing would expire",
        )
    settings = settings.with_overrides(retain_months=options.retain_months)
    real_now = datetime.now(UTC)
    start_month = domain.month_of(real_now, settings.zone)
    report = SoakReport(
        started_at=real_now.isoformat(timespec="seconds"),
        months=options.months,
        retain_months=options.retain_months,
        users=options.users,
        tickets_per_user=options.tickets_per_user,
        partitions=settings.partitions,
    )
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    STATE_DIR.mkdir(parents=True)
    clock_path = (STATE_DIR / "clock").resolve()
    write_clock(clock_path, clock_moment(start_month))
    with contextlib.ExitStack() as stack:
        say("starting the embedded broker…")
        broker = stack.enter_context(EmbeddedBroker())
        say(f"broker: {broker.bootstrap} (pid {broker.process.pid if broker.process else '?'})")
        asyncio.run(create_topics(broker.bootstrap, topic_catalogue(settings)))
        # Signed up two years before the first month: tenure moves through the buckets slowly.
        signup = month_moment(start_month - 24, 1)
        profiles = profile_records(options.users, signup, options.seed)
        say(f"loading {len(profiles):,} profiles…")
        asyncio.run(
            produce_records(
                broker.bootstrap,
                TOPIC_PROFILES,
                ((key_of(value), value) for value in profiles),
                one_record_batches=True,
            )
        )
        env = process_environment(settings, broker.bootstrap, STATE_DIR)
        env[CLOCK_FILE_ENV] = str(clock_path)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(CLOCK_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        worker = WorkerProcess(env, STATE_DIR / "worker.log")
        report.worker_log = str(worker.log_path)
        stack.callback(worker.stop)
        worker.start()
        say(f"worker: pid {worker.pid}, log {worker.log_path}; waiting until it is healthy…")
        try:
            worker.wait_healthy(START_TIMEOUT_S)
        except WorkerStartError as exc:
            raise BenchFailed(str(exc)) from None
        asyncio.run(
            _run_months(
                broker.bootstrap, worker, clock_path, settings, options, start_month, report, say
            )
        )
        report.worker_peak_rss_bytes = memory_of(worker.pid or 0, with_children=True).peak_rss_bytes
        worker.stop()
    report.flatness = flatness(report.samples, options.retain_months)
    return report
