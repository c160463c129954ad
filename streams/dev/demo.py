"""``cci demo``: the whole pipeline on loopback, fed with live traffic, shown as a live table.

One process starts and stops everything it uses: the embedded broker, the topics, a ``cci worker``
child, a feeder producing synthetic traffic (``demo_traffic``), and a reader of ``cci-updates``
whose newest figures of the current month fill the table (``demo_table``). This module holds the
supervision (the broker, the worker child process, its health, stopping both) and ``run_demo``:
the orchestration, signals and shutdown order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from streams import domain
from streams.dev.broker import (
    LOOPBACK,
    BrokerStartError,
    EmbeddedBroker,
    free_port,
    port_is_free,
)
from streams.dev.demo_table import (
    CciRow,
    Header,
    RateMeter,
    UpdatesView,
    plain_view,
    read_updates,
    rich_view,
    table_dimensions,
)
from streams.dev.demo_traffic import (
    HISTORY_MONTHS,
    HISTORY_SEED,
    TrafficCounters,
    TrafficFeeder,
)
from streams.dev.generate import generate
from streams.dev.produce import key_of, produce_in_bulk
from streams.dev.worker_process import WorkerProcess, worker_environment
from streams.kafka.admin import TopicCreationError, create_topics
from streams.settings import TOPIC_PROFILES, Settings
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


# SIGHUP too: the worker and the broker run in sessions of their own, so a closed terminal would
# not end them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

LIVE_REFRESH_S = 0.5
PLAIN_REFRESH_S = 5.0


# --- supervision -----------------------------------------------------------------------------


def choose_web_port(preferred: int) -> int:
    """``preferred`` if it is free, else any free loopback port."""
    return preferred if port_is_free(preferred) else free_port()


# Without CCI_ALERT_RULES the demo's worker alerts with these example rules (package data), so a
# new user sees alerts fire on the dashboard without writing a rules file.
DEMO_ALERT_RULES = Path(__file__).resolve().parent / "demo-alert-rules.toml"
DEMO_CLICKHOUSE_URL = f"chdb://{STATE_DIR / 'clickhouse'}"


def demo_worker_environment(
    settings: Settings, bootstrap: str, web_port: int, base: Mapping[str, str]
) -> dict[str, str]:
    """The worker's environment: the caller's pipeline settings, pointed at the loopback demo,
    its state in ``STATE_DIR``; without alert rules of the caller's, ``DEMO_ALERT_RULES``."""
    return worker_environment(
        bootstrap,
        data_dir=STATE_DIR / "data",
        clickhouse_url=DEMO_CLICKHOUSE_URL,
        settings=settings,
        base=base,
        web_port=web_port,
        default_alert_rules=DEMO_ALERT_RULES,
    )


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
        profiles = produce_in_bulk(
            broker.bootstrap, TOPIC_PROFILES, ((key_of(value), value) for value in history.profiles)
        )
        if not await self._unless_stopped(profiles):
            return False

        web_port = choose_web_port(self.settings.web_port)
        if web_port != self.settings.web_port:
            self.say(
                f"port {self.settings.web_port} is busy: the worker's web server uses {web_port}"
            )
        env = demo_worker_environment(self.settings, broker.bootstrap, web_port, os.environ)
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
            f"query it meanwhile: CCI_CLICKHOUSE_URL={DEMO_CLICKHOUSE_URL}"
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
                status = await asyncio.to_thread(worker.health, HEALTH_REQUEST_TIMEOUT_S)
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
            self.health = describe_health(
                await asyncio.to_thread(worker.health, HEALTH_REQUEST_TIMEOUT_S)
            )
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
            worker_log=WORKER_LOG,
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
