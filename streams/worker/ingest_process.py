"""Stages 1–2 in a process of their own, so that they run on the worker's second core.

Validation and enrichment need nothing of Faust and cost about half of the worker's CPU per event
(py-spy: 46% of its main thread). Python runs one thread at a time, so the ingest runner
(``streams/worker/ingest.py``) and the profile table it enriches with
(``streams/worker/profiles.py``) run in a child process of the worker, and the deduplicate and
aggregate stages have the main one to themselves.

The two talk over a socket pair, in length-prefixed pickles:

* worker → child: ``(settings, facts topic)``, later ``STOP``;
* child → worker: a ``Report`` (ingest running, profiles loaded, the ingest metrics) every
  ``REPORT_INTERVAL``, before ingest commits the offsets of a batch, and once more on the way out.
  The worker serves those as its own health and metrics. The one before a commit is in the
  kernel's socket buffer before the commit is sent: a child killed after a commit has told the
  worker its counts, which its successor does not count again (it starts after the commit).

Lifetime: the child ignores SIGINT and SIGTERM (a Ctrl-C or a stop of the worker's process group
reaches it too): it stops when the worker says STOP. When the worker dies, the kernel kills the
child (``streams/children.py``), and a child whose socket closes exits too; when the child dies, the
worker starts another after a back-off. Either way ingest resumes from its committed offsets,
and the deduplicate stage absorbs the facts it sends again (``streams/worker/ingest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mode import Service
from mode.utils.logging import setup_logging

from streams import children, metrics
from streams.clock import clock_for
from streams.kafka import lean_records
from streams.logs import logging_config, quiet_repeats
from streams.loops import Ended, Loop
from streams.pipeline.enrich import Enricher
from streams.redaction import install_log_redaction
from streams.settings import TOPIC_PROFILES, Settings
from streams.worker import gc_policy as collector
from streams.worker.ingest import IngestRunner
from streams.worker.profiles import ProfileBook

log = logging.getLogger(__name__)

REPORT_INTERVAL = 0.1  # seconds between the child's reports: how stale its metrics can be
STOP = "stop"
# Seconds before starting a child that died: doubling from the first to the most, and back to the
# first for a child that had run for STABLE_AFTER_S.
BACKOFF_FIRST_S, BACKOFF_MOST_S, STABLE_AFTER_S = 0.5, 15.0, 60.0
EXIT_WAIT_S = 5.0  # seconds a child whose socket closed has to exit before it is killed

_HEADER = struct.Struct(">I")
# A fresh interpreter that imports only what ingest needs: no Faust app, no ClickHouse engine.
_CHILD_CODE = "from streams.worker.ingest_process import child_main; child_main()"


@dataclass(frozen=True)
class Report:
    """What the child tells the worker."""

    running: bool = False  # ingest's consumer and producer are started
    profiles_loaded: bool = False
    metrics: metrics.Snapshot = field(default_factory=dict)
    stalled: str = ""  # why ingest makes no progress (IngestRunner.stalled), "" while it does


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message, or None once the other end has closed."""
    try:
        header = await reader.readexactly(_HEADER.size)
        return pickle.loads(await reader.readexactly(_HEADER.unpack(header)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def write_message(writer: asyncio.StreamWriter, message: Any) -> None:
    body = pickle.dumps(message)
    writer.write(_HEADER.pack(len(body)) + body)


# --- the worker's side ---------------------------------------------------------------------------


class IngestProcesses:
    """The worker's ``CCI_INGEST_PROCESSES`` ingest processes, seen as one: healthy when each is,
    their problems, and their gauges combined (each reads its share of the input partitions)."""

    def __init__(self, settings: Settings, facts_topic: str) -> None:
        count = settings.ingest_processes
        self.processes = [
            IngestProcess(settings, facts_topic, index, count, self._reported)
            for index in range(count)
        ]

    @property
    def healthy(self) -> bool:
        return all(process.healthy for process in self.processes)

    @property
    def problem(self) -> str:
        """Why ingest cannot make progress ("" when it can, or is still starting normally)."""
        return "; ".join(process.problem for process in self.processes if process.problem)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def _reported(self) -> None:
        metrics.combine_gauges(
            metrics.INGEST_METRICS,
            (process.report.metrics for process in self.processes),
            earliest=(metrics.first_event_consumed,),
        )
        metrics.ingest_stalled.set(1 if self.problem else 0)


class IngestProcess(Loop):
    """Runs ingest in a child process, starts another when it dies, and relays its reports."""

    backoff_initial, backoff_max = BACKOFF_FIRST_S, BACKOFF_MOST_S
    stop_within = 20.0

    def __init__(
        self,
        settings: Settings,
        facts_topic: str,
        index: int = 0,
        count: int = 1,
        on_report: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.what = "ingest process" if count == 1 else f"ingest process {index + 1} of {count}"
        self.settings = settings
        self.facts_topic = facts_topic
        # Gauges are the group's (combined over its processes). Every process follows the whole
        # profile table: the first counts its invalid profiles.
        gauges = tuple(m for m in metrics.INGEST_METRICS if isinstance(m, metrics.Gauge))
        self._skipped = gauges if index == 0 else (*gauges, metrics.invalid_profiles)
        self._on_report = on_report or (lambda: None)
        self.report = Report()
        self.pid: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_exit = ""  # how the last child ended, while its successor is not running yet

    @property
    def healthy(self) -> bool:
        return self.report.running and self.report.profiles_loaded and not self.problem

    @property
    def problem(self) -> str:
        """Why ingest cannot make progress ("" when it can, or is still starting normally)."""
        if self.report.stalled:
            return f"ingest {self.report.stalled}"
        if self._last_exit and not self.report.running:
            return self._last_exit
        return ""

    def _show_problem(self) -> None:
        self._on_report()  # the group sets the gauges and cci_ingest_stalled

    async def on_stop(self) -> None:
        self._send_stop()
        await super().on_stop()

    async def on_stop_timeout(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    def _send_stop(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            write_message(self._writer, STOP)

    async def run(self) -> None:
        started = time.monotonic()
        code = await self._run_child()
        if self.should_stop:
            return
        if time.monotonic() - started > STABLE_AFTER_S:
            self.progressed()  # it had run long enough: start the next one soon
        raise Ended(f"the {self.what} exited (code {code})")

    async def on_failure(self, exc: Exception) -> None:
        self._last_exit = f"the {self.what} exited; restarting it ({exc})"
        if isinstance(exc, Ended):
            self._last_exit = f"{exc}; restarting it"
        self._show_problem()

    async def _run_child(self) -> int:
        ours, theirs = socket.socketpair()
        try:
            # Forked by the event loop's thread, which lives as long as the worker: the child
            # dies with the worker however it ends (streams/children.py).
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CHILD_CODE,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                preexec_fn=children.die_with_parent(),
            )
        finally:
            theirs.close()
        self._process, self.pid = process, process.pid
        log.info("%s started: pid %d", self.what, process.pid)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        previous: metrics.Snapshot = {}
        try:
            write_message(writer, (self.settings, self.facts_topic))
            self._writer = writer
            if self.should_stop:  # stop() came while the child was starting
                self._send_stop()
            while (report := await read_message(reader)) is not None:
                metrics.apply_snapshot(
                    metrics.INGEST_METRICS, previous, report.metrics, skip=self._skipped
                )
                previous = report.metrics
                self.report = report
                if report.running:
                    self._last_exit = ""
                self._show_problem()
        except BaseException:
            if process.returncode is None:
                process.kill()  # we failed: this child must not outlive the attempt
            raise
        finally:
            self._writer = None
            self.report = Report()
            writer.close()
        if not self.should_stop:
            # Its end closed: it died, or it is dying. Kill it only if it does not exit: killing
            # a process that has exited reaps it (``Popen.send_signal`` polls first), and asyncio
            # then reports 255 for a status it never saw.
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(process.wait(), EXIT_WAIT_S)
            process.kill()  # it closed its end without exiting: start afresh
        return await process.wait()


# --- the child's side ----------------------------------------------------------------------------


def child_main() -> None:
    """Entry point of the ingest process; ``sys.argv[1]`` is its end of the socket pair."""
    # Ctrl-C and a SIGTERM to the worker's process group reach this process too; the worker
    # decides when ingest stops (STOP), and it going away stops ingest at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    asyncio.run(_serve(socket.socket(fileno=int(sys.argv[1]))))


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    # drain() returns once the kernel has every byte written, not below a 64 KiB backlog: a
    # report drained before a commit survives this process being killed.
    writer.transport.set_write_buffer_limits(high=0)
    first = await read_message(reader)
    if first is None:
        return
    settings, facts_topic = first
    setup_logging(
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_format, settings.log_level),
    )
    install_log_redaction(settings)
    quiet_repeats()
    collector.configure()
    lean_records.install()  # this process's consumers yield named tuples (its slowest part)
    child = IngestChild(settings, facts_topic, reader, writer)
    await child.start()
    log.info(
        "ingest process %d: loading profiles, then ingesting into %s", os.getpid(), facts_topic
    )
    try:
        await child.done.wait()
    finally:
        await child.stop()
        with contextlib.suppress(ConnectionError):
            child.report()  # the counts of the last batches
            await writer.drain()
        writer.close()
    log.info("ingest process %d: stopped", os.getpid())
    if child.failed:
        sys.exit(1)


class IngestChild(Service):
    """The child's side: the profile table and ingest (dependencies, stopped ingest first), a
    report to the worker every ``REPORT_INTERVAL``, and the worker's STOP awaited."""

    def __init__(
        self,
        settings: Settings,
        facts_topic: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__()
        self.reader, self.writer = reader, writer
        self.profiles = ProfileBook(
            settings.kafka_bootstrap,
            TOPIC_PROFILES,
            settings.zone,
            settings.max_event_bytes,
            settings.kafka_client_kwargs(),
            on_invalid=lambda reason: metrics.invalid_profiles.labels(reason).inc(),
            max_segment_chars=settings.max_segment_chars,
        )
        self.runner = IngestRunner(
            settings,
            Enricher.from_settings(settings, self.profiles.get),
            facts_topic,
            self.profiles.wait_loaded,
            clock=clock_for(settings),
            before_commit=self.report_counts,
        )
        self.add_dependency(self.profiles)
        self.add_dependency(self.runner)
        self.done = asyncio.Event()  # the worker said STOP, or this process must exit
        self.failed = False

    def report(self) -> None:
        write_message(
            self.writer,
            Report(
                self.runner.running.is_set(),
                self.profiles.loaded.is_set(),
                metrics.snapshot(metrics.INGEST_METRICS),
                self.runner.stalled,
            ),
        )

    async def report_counts(self) -> None:
        """Ingest is about to commit a batch it has counted: the worker gets the counts first."""
        with contextlib.suppress(ConnectionError):  # the worker has gone: _watch_worker exits
            self.report()
            await self.writer.drain()

    @Service.task
    async def _report_until_done(self) -> None:
        while not self.done.is_set():
            if self.profiles.follower.failed.is_set():
                # Logged by the follower. Exit: the worker shows it on /health and starts
                # another ingest process, rather than this one waiting for profiles for ever.
                log.error("ingest process %d: the profile table failed; exiting", os.getpid())
                self.failed = True
                break
            try:
                self.report()
                await self.writer.drain()
            except ConnectionError:
                break  # the worker has gone: _watch_worker exits
            await self.sleep(REPORT_INTERVAL)
        self.done.set()

    @Service.task
    async def _watch_worker(self) -> None:
        if await read_message(self.reader) == STOP:
            self.done.set()
            return
        # The worker has gone without a word: go too, at once, as if we had died with it.
        log.error("ingest process %d: the worker has gone; exiting", os.getpid())
        os._exit(1)

    @Service.task
    async def _freeze_when_loaded(self) -> None:
        await self.profiles.wait_loaded()
        collector.freeze_survivors()  # the profile table is loaded: keep full collections short
