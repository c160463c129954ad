"""``cci bench --recovery``: how long a fail-over takes, with standby replicas off and on.

For each ``CCI_STANDBY_REPLICAS`` value (0, then 1), on a fresh embedded broker:

1. the inputs are loaded, all but a held-back tenth of the tickets (the *probe*);
2. two ``cci worker`` processes share the group until ``cci-updates`` equals the recount;
3. the second worker (the *owner* of half the state) is killed with SIGKILL, and the probe is
   produced at once: it touches users of every partition, so the figures are exact again only
   once the survivor owns the killed worker's partitions, has recovered their state and
   published;
4. measured from the kill: when the survivor's ``/health`` stops being 200 (the group noticed
   the death: ``CCI_SESSION_TIMEOUT``), when it is 200 again (state recovered), and when
   ``cci-updates`` equals the recount of everything (the figures are exact again).

State, logs and stores are in ``.cci/bench-recovery/`` (cleared at every start, kept afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from streams.bench.measure import describe_difference, metric_values
from streams.bench.run import BenchFailed, OutputTail, decode_update, process_environment
from streams.dev.broker import EmbeddedBroker
from streams.dev.generate import generate
from streams.dev.produce import key_of, produce_in_bulk
from streams.dev.worker_process import WorkerProcess
from streams.kafka.admin import create_topics
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, TOPIC_UPDATES, Settings
from streams.topics import topic_catalogue

STATE_DIR = Path(".cci/bench-recovery")
# A few minutes on a 2-core machine. The size, a killed worker holding 1,000,000
# user-months, is --users 1020000 (~2 user-months a user over 3 months, half of them its own).
DEFAULT_USERS = 20_000
PROBE_SHARE = 10  # one ticket in ten is held back and produced right after the kill
POLL_S = 0.2
SETTLE_TIMEOUT_S = 1800.0  # a first settle of 1M users on a loaded 2-core machine is slow

Say = Callable[[str], None]
Figures = dict[tuple[str, str, str], tuple[int, int]]


class RecoveryFailed(BenchFailed):
    """A worker died, or the figures never became exact."""


@dataclass
class FailoverRun:
    """One fail-over, timed from the SIGKILL of the owner (seconds)."""

    standby_replicas: int
    killed_owned_user_months: float | None = None  # the killed worker's state, by its gauge
    survivor_standby_user_months: float | None = None  # its standby copy at the kill
    unhealthy_after_s: float | None = None  # the survivor's /health left 200 (death noticed)
    healthy_after_s: float | None = None  # back to 200: the moved partitions are recovered
    exact_after_s: float | None = None  # cci-updates equals the recount of everything
    took_over_standby: bool = False  # the survivor's log says it promoted a standby copy
    exact: bool = False
    difference: list[str] = field(default_factory=list)


@dataclass
class RecoveryReport:
    started_at: str
    users: int
    months: int
    user_months: int
    partitions: int
    session_timeout_s: float
    load_average_1m: float | None
    runs: list[FailoverRun]


def run_recovery_bench(
    settings: Settings, users: int, months: int, seed: int, say: Say
) -> RecoveryReport:
    """Both fail-overs (standby off, then on) on the same data; raises RecoveryFailed when a
    part could not run. Figures that stay wrong are in the report, not raised."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    now = datetime.now(UTC)
    say(f"generating {users:,} users' traffic over {months} months…")
    data = generate(users, months, seed, now, settings.zone)
    probe = data.tickets[::PROBE_SHARE]
    before = [t for i, t in enumerate(data.tickets) if i % PROBE_SHARE]
    say(f"recounting {len(data.activity) + len(data.tickets):,} events…")
    expected_before = recount(data.activity, before, data.profiles, now, settings).figures
    result = recount(data.activity, data.tickets, data.profiles, now, settings)
    runs = []
    for replicas in (0, 1):
        state_dir = STATE_DIR / f"standby-{replicas}"
        shutil.rmtree(state_dir, ignore_errors=True)
        state_dir.mkdir(parents=True)
        inputs = {TOPIC_PROFILES: data.profiles, TOPIC_ACTIVITY: data.activity}
        inputs[TOPIC_TICKETS] = before
        run = _failover(
            settings.with_overrides(standby_replicas=replicas),
            state_dir,
            inputs,
            probe,
            (expected_before, result.figures),
            say,
        )
        runs.append(run)
    return RecoveryReport(
        started_at,
        users,
        months,
        result.active_user_months,
        settings.partitions,
        settings.session_timeout,
        load,
        runs,
    )


def _failover(
    settings: Settings,
    state_dir: Path,
    inputs: dict[str, list[bytes]],
    probe: list[bytes],
    expected: tuple[Figures, Figures],
    say: Say,
) -> FailoverRun:
    run = FailoverRun(settings.standby_replicas)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        bootstrap = broker.bootstrap
        asyncio.run(create_topics(bootstrap, topic_catalogue(settings)))
        loading = time.monotonic()
        for topic, values in inputs.items():
            asyncio.run(_produce(bootstrap, topic, values))
        say(
            f"standby replicas {settings.standby_replicas}: loaded "
            f"{sum(map(len, inputs.values())):,} records in {time.monotonic() - loading:.0f} s"
        )
        workers = []
        for name in ("survivor", "owner"):
            env = process_environment(settings, bootstrap, state_dir / name)
            worker = WorkerProcess(env, state_dir / f"{name}.log")
            stack.callback(worker.stop)
            workers.append(worker.start())
        survivor, owner = workers
        pids = [broker.process.pid if broker.process else "?", *(w.pid for w in workers)]
        say(
            f"standby replicas {settings.standby_replicas}: broker pid {pids[0]}, workers pid "
            f"{pids[1]} and pid {pids[2]}, logs in {state_dir}"
        )
        for worker in workers:
            worker.wait_healthy(timeout=300)
        asyncio.run(_settle(bootstrap, expected[0], workers, SETTLE_TIMEOUT_S))
        run.killed_owned_user_months = _gauge(owner, "cci_user_months")
        run.survivor_standby_user_months = _gauge(survivor, "cci_standby_user_months")
        say(
            f"  exact; killing the owner of {run.killed_owned_user_months or 0:,.0f} "
            f"user-months (survivor's standby copy: {run.survivor_standby_user_months or 0:,.0f})"
        )
        owner.kill()
        killed = time.monotonic()
        asyncio.run(_produce(bootstrap, TOPIC_TICKETS, probe))
        asyncio.run(_after_kill(bootstrap, expected[1], survivor, killed, run, say))
        run.took_over_standby = "taking over its standby state" in survivor.log_path.read_text()
        say(
            f"  unhealthy after {_s(run.unhealthy_after_s)}, healthy after "
            f"{_s(run.healthy_after_s)}, exact after {_s(run.exact_after_s)}"
        )
    return run


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    await produce_in_bulk(bootstrap, topic, ((key_of(value), value) for value in values))


async def _settle(
    bootstrap: str, expected: Figures, workers: list[WorkerProcess], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    async with OutputTail(bootstrap, TOPIC_UPDATES, decode_update) as tail:
        while time.monotonic() < deadline:
            await tail.read()
            if tail.history.figures() == expected:
                return
            for worker in workers:
                if worker.exited() is not None:
                    raise RecoveryFailed(f"a worker exited:\n{worker.log_tail()}")
        lines = describe_difference(expected, tail.history.figures())
    raise RecoveryFailed("the two workers' figures never became exact:\n" + "\n".join(lines))


async def _after_kill(
    bootstrap: str,
    expected: Figures,
    survivor: WorkerProcess,
    killed: float,
    run: FailoverRun,
    say: Say,
) -> None:
    """Follow the survivor's /health and cci-updates from the kill until the figures are exact
    and the survivor is healthy again (or SETTLE_TIMEOUT_S). Each step is said as it is seen:
    a large run that never becomes exact still shows how far it got."""
    deadline = killed + SETTLE_TIMEOUT_S
    next_health = 0.0
    async with OutputTail(bootstrap, TOPIC_UPDATES, decode_update) as tail:
        while time.monotonic() < deadline:
            await tail.read()
            now = time.monotonic()
            if run.exact_after_s is None and tail.history.figures() == expected:
                run.exact_after_s = now - killed
                run.exact = True
                say(f"  exact again after {_s(run.exact_after_s)}")
            if now >= next_health:
                next_health = now + POLL_S
                status = await asyncio.to_thread(survivor.health, 1.0)
                if status != 200 and run.unhealthy_after_s is None:
                    run.unhealthy_after_s = now - killed
                    say(f"  /health left 200 after {_s(run.unhealthy_after_s)}")
                elif (
                    status == 200
                    and run.unhealthy_after_s is not None
                    and run.healthy_after_s is None
                ):
                    run.healthy_after_s = now - killed
                    say(f"  /health 200 again after {_s(run.healthy_after_s)}")
            if survivor.exited() is not None:
                raise RecoveryFailed(f"the surviving worker exited:\n{survivor.log_tail()}")
            if run.exact and (run.healthy_after_s is not None or now - killed > 120):
                return
        run.difference = describe_difference(expected, tail.history.figures())


def _gauge(worker: WorkerProcess, name: str) -> float | None:
    return metric_values(worker.get("/metrics"), [name])[name]


def _s(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.1f} s"


def render_recovery(report: RecoveryReport) -> str:
    load = "?" if report.load_average_1m is None else f"{report.load_average_1m:.1f}"
    lines = [
        f"fail-over of a killed worker: {report.user_months:,} user-months over "
        f"{report.partitions} partitions, 2 workers, session timeout "
        f"{report.session_timeout_s:g} s, load average {load} ({report.started_at})",
        f"{'standby':>7}  {'killed owned':>12}  {'standby copy':>12}  {'unhealthy':>9}  "
        f"{'healthy':>9}  {'exact':>9}  took over standby",
    ]
    for run in report.runs:
        lines.append(
            f"{run.standby_replicas:>7}  {run.killed_owned_user_months or 0:>12,.0f}  "
            f"{run.survivor_standby_user_months or 0:>12,.0f}  {_s(run.unhealthy_after_s):>9}  "
            f"{_s(run.healthy_after_s):>9}  {_s(run.exact_after_s):>9}  "
            f"{'yes' if run.took_over_standby else 'no'}"
        )
        lines += [f"    {line}" for line in run.difference]
    lines.append("seconds are from the SIGKILL; exact: cci-updates equals the recount again")
    return "\n".join(lines)


def recovery_json(report: RecoveryReport) -> str:
    return orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode()


def exit_status(report: RecoveryReport) -> int:
    return 0 if all(run.exact for run in report.runs) else 1


def output(report: RecoveryReport, as_json: bool) -> tuple[str, int]:
    """What ``cci bench --recovery`` prints, and its exit status (1: figures not exact)."""
    return (recovery_json(report) if as_json else render_recovery(report)), exit_status(report)
