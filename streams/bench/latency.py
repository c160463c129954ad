"""The latency phase of ``cci bench``: the worker, past its backlog, fed new events at the
offered rate; each event's produce → visible time (``LATENCY_DEFINITION`` in
``streams/bench/report.py``), then the figures checked against the recount of everything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from streams import domain
from streams.bench.measure import EMPTY, per_second, percentile, visibility_latencies
from streams.bench.outputs import OutputTail, wait_settled
from streams.bench.phase import Say
from streams.bench.report import LatencyRun
from streams.bench.traffic import LatencyEvent, due_events, latency_events
from streams.bench.workload import BenchOptions, Workload
from streams.pipeline.recount import recount
from streams.settings import Settings
from streams.worker import gc_policy as collector

PACE_TICK_S = 0.002
# The offered load's producer batches as Kafka's own producer does by default since 4.0
# (linger.ms=5, KIP-1030); the linger counts in each event's latency (its timestamp is taken at
# send). With no linger each 2 ms tick made a batch per partition, and the embedded broker lists
# every batch of a partition on each fetch of it (docs/embedded-broker.md).
OFFERED_LOAD_LINGER_MS = 5


async def produce_paced(
    bootstrap: str, events: list[LatencyEvent], rate: float
) -> tuple[list[int], float]:
    """Produce ``events`` at ``rate`` per second; each one's produce timestamp (ms, also its
    record timestamp) and the seconds the whole took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=OFFERED_LOAD_LINGER_MS
    )
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
    # The load generator holds the workload (a million events and their recount): its full
    # collections took half a core every ~5 s, and events stamped before one were sent after it.
    collector.freeze_survivors()
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
