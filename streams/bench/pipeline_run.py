"""The pipeline phase of ``cci bench``: one ``cci worker`` through the backlog until
``cci-updates`` equals the recount, then until its ClickHouse store does; its gauges from
``GET /metrics``; then, on the same worker, the latency phase."""

from __future__ import annotations

import asyncio
import contextlib
import time

from streams.bench.latency import run_latency
from streams.bench.measure import (
    describe_difference,
    memory_of,
    metric_values,
    per_second,
    ratio,
    seconds_between,
)
from streams.bench.outputs import OutputTail, Settled, decode_update, wait_settled
from streams.bench.phase import (
    METRICS_POLL_S,
    STALL_TIMEOUT_S,
    START_TIMEOUT_S,
    STATE_DIR,
    BenchFailed,
    Figures,
    Say,
    summary,
)
from streams.bench.report import LatencyRun, PipelineRun
from streams.bench.workload import BenchOptions, Workload
from streams.dev.worker_process import WorkerProcess
from streams.settings import TOPIC_UPDATES, Settings
from streams.store.query import QueryError, run_query

STORE_POLL_S = 0.5
STORE_SQL = (
    "SELECT formatDateTime(month, '%Y-%m'), dimension, segment, tickets, active_users "
    "FROM cci_segment_monthly FINAL"
)


FIRST_EVENT_GAUGE = "cci_first_event_consumed_timestamp_seconds"


async def first_event_ms(worker: WorkerProcess) -> int:
    """When the worker's ingest process first received input records: its own clock's reading
    (``cci_first_event_consumed_timestamp_seconds``), the clock that stamps the worker's output
    records, so the time it took to see it through ``/metrics`` counts for nothing."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        code = worker.exited()
        if code is not None:
            raise BenchFailed(f"the worker exited with {code}:\n{worker.log_tail()}")
        try:
            page = await asyncio.to_thread(worker.get, "/metrics")
        except OSError:
            page = ""  # not listening yet
        first = metric_values(page, [FIRST_EVENT_GAUGE])[FIRST_EVENT_GAUGE]
        if first:
            return round(first * 1000)
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
        run.first_output_seconds = seconds_between(first_ms, tail.first_record_ms)
        run.seconds = seconds_between(first_ms, settled.at_ms)
        run.events_per_s = per_second(workload.events, run.seconds)
        say(summary("pipeline → cci-updates", run.exact, run.events_per_s, run.seconds))
        if settled.exact:
            store = settings.with_overrides(
                web_port=worker.port, clickhouse_url=env["CCI_CLICKHOUSE_URL"]
            )
            stored = await wait_store(store, workload.expected)
            run.clickhouse_exact = stored.exact
            run.difference += stored.difference
            run.clickhouse_seconds = seconds_between(first_ms, stored.at_ms)
            run.clickhouse_events_per_s = per_second(workload.events, run.clickhouse_seconds)
            say(
                summary(
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
