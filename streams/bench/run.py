"""``cci bench``: one run, start to finish, on a fresh embedded broker.

The phases run one after the other, so none measures another's CPU use:

1. **data** — ``streams.dev.generate`` traffic cut to N events, and its batch recount (the expected
   figures every result is checked against);
2. **load** — a fresh broker, every topic created up front with configs (the peers' outputs too),
   profiles produced one record per batch (the worker reads them to their end offsets), activity
   and tickets batched, all keyed by ``user_id``;
3. **ceiling** — one aiokafka consumer in a group fetching and parsing every input record;
4. **peers** — each ``--peer`` (``streams/bench/peers/``) in its own process, in turn, until its
   output equals the recount; then it is stopped;
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
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from streams.bench.ceiling import consume_ceiling
from streams.bench.measure import memory_of
from streams.bench.outputs import OutputTail, decode_update
from streams.bench.peer_run import run_peer
from streams.bench.peers import PEERS
from streams.bench.peers.environments import PeerEnvironmentError, ensure
from streams.bench.phase import (
    STALL_TIMEOUT_S,
    START_TIMEOUT_S,
    STATE_DIR,
    BenchFailed,
    BenchUsageError,
    Say,
)
from streams.bench.pipeline_run import run_pipeline
from streams.bench.report import BenchReport, RunInfo
from streams.bench.workload import BenchOptions, bench_topics, load_inputs, prepare_workload
from streams.dev.broker import EmbeddedBroker
from streams.dev.demo import DEMO_ALERT_RULES
from streams.dev.worker_process import worker_environment
from streams.kafka.admin import create_topics
from streams.settings import Settings

# Named here too: ``cci bench`` and ``cci soak`` import them from this module.
__all__ = [
    "STALL_TIMEOUT_S",
    "START_TIMEOUT_S",
    "BenchFailed",
    "BenchOptions",
    "BenchUsageError",
    "OutputTail",
    "decode_update",
    "process_environment",
    "run_bench",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    peers = [PEERS[name] for name in options.peers]
    pythons = {}
    for peer in peers:  # before any data: a peer that cannot run stops the bench at once
        try:
            pythons[peer.name] = ensure(peer, say)
        except PeerEnvironmentError as exc:
            raise BenchFailed(f"{peer.title} cannot run: {exc}") from exc
    workload = prepare_workload(settings, options, say)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    STATE_DIR.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        say("starting the embedded broker…")
        broker = stack.enter_context(EmbeddedBroker())
        say(f"broker: {broker.bootstrap} (pid {broker.process.pid if broker.process else '?'})")
        topics = bench_topics(settings, [peer.output_topic for peer in peers])
        asyncio.run(create_topics(broker.bootstrap, topics))
        say(f"loading {workload.events:,} events and {len(workload.profiles):,} profiles…")
        asyncio.run(load_inputs(broker.bootstrap, workload))
        ceiling = asyncio.run(consume_ceiling(broker.bootstrap, workload.events, settings))
        say(f"consume ceiling: {ceiling.events_per_s or 0:,.0f} events/s ({ceiling.seconds:.2f} s)")
        env = process_environment(settings, broker.bootstrap)
        peer_runs = [
            asyncio.run(
                run_peer(peer, pythons[peer.name], broker.bootstrap, env, workload, stack, say)
            )
            for peer in peers
        ]
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
        peers=peer_runs,
        latency=latency,
        broker_peak_rss_bytes=broker_memory.peak_rss_bytes,
        bench_peak_rss_bytes=memory_of("self").peak_rss_bytes,
    )
