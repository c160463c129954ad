"""``cci soak``: one ``cci worker`` living through simulated calendar months, its memory per month.

``cci bench`` sees three months of wall-clock-now data, so retention (``CCI_RETAIN_MONTHS``,
counted back from *now*) never expires anything there. Here the worker's clock is moved forward
a month at a time (``CCI_CLOCK_OFFSET_FILE``, ``streams/clock.py``: real time plus an offset read
from a file), and each simulated month gets its own traffic (``soak_traffic.py``):

1. the clock file is set to the 28th, 12:00 UTC, of month ``m``;
2. every one of ``--users`` users is active once in month ``m`` and about ``--tickets-per-user``
   tickets per user are created;
3. once ``cci-updates`` has month ``m``'s ``all|all`` figure, the dedup state holds the expected
   user-months (``min(m, retain) × users``: the months before the retention window expired), the
   sink has written everything and the input lag is 0, the worker's RSS and state gauges are read.

RSS is expected to stop growing once the state holds ``retain`` months; ``flatness``
(``soak_report.py``) compares it there with the end. Dead letters are counted too: any at all
would mean the simulated clock and the events disagree. State, log and store are in
``.cci/soak/`` (cleared at every start).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

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
from streams.bench.soak_report import MonthSample, SoakReport, flatness, mib
from streams.bench.soak_traffic import (
    clock_moment,
    clock_offset_seconds,
    expected_user_months,
    month_moment,
    month_of_index,
    month_traffic,
    profile_records,
)
from streams.dev.broker import EmbeddedBroker
from streams.dev.produce import key_of, produce_in_bulk, produce_records
from streams.dev.worker_process import WorkerProcess, WorkerStartError
from streams.kafka.admin import create_topics
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, TOPIC_UPDATES, Settings
from streams.store.query import QueryError, run_query
from streams.topics import topic_catalogue

STATE_DIR = Path(".cci/soak")
# The worker re-reads its clock file (CCI_CLOCK_OFFSET_FILE) every 0.2 s; producing only after
# this long makes sure ingest judges the month's events against the month's clock.
CLOCK_SETTLE_S = 0.6
SAMPLE_SETTLE_S = 1.0  # after the month is processed: let timers and the sink go quiet
POLL_S = 0.2
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
                f"{sample.user_months:,}; state {mib(sample.state_bytes)} MiB; "
                f"RSS {mib(sample.rss_bytes)} MiB (store {mib(sample.store_bytes)} MiB)"
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
            produce_in_bulk(
                broker.bootstrap, TOPIC_PROFILES, ((key_of(value), value) for value in profiles)
            )
        )
        env = process_environment(settings, broker.bootstrap, STATE_DIR)
        env["CCI_CLOCK_OFFSET_FILE"] = str(clock_path)
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
