"""The host's consume ceiling: how fast one plain aiokafka consumer in a group fetches and parses
every input record of the bench's broker. Every other figure is read against it."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer

from streams.bench.measure import per_second
from streams.bench.phase import START_TIMEOUT_S, BenchFailed
from streams.bench.report import CeilingRun
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS, Settings

CEILING_GROUP = "cci-bench-ceiling"
CEILING_MAX_RECORDS = 10_000


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
