"""Sustained events/s of one worker, end to end, on the embedded broker (a benchmark, not a test).

Preloads generated traffic into a fresh broker, starts one worker, and measures from the moment it
is healthy until the latest cci-updates equal the batch recount exactly. Also measures the
consume ceiling on the same topics: a raw aiokafka loop that only fetches and parses.

    .venv/bin/python bench/pipeline_throughput.py --users 20000 --months 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.batch import recount
from streams.dev.broker import EmbeddedBroker
from streams.dev.produce import produce_records
from streams.generate import generate
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    load_settings,
)
from tests.integration.harness import (
    WorkerProcess,
    create_all_topics,
    figures_of,
    latest_updates,
    worker_env,
)


async def consume_ceiling(bootstrap: str, topics: list[str], total: int) -> float:
    """Seconds for a bare aiokafka consumer to fetch and JSON-parse every input record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()

    settings = load_settings({})
    now = datetime.now(UTC)
    data = generate(args.users, args.months, args.seed, now, settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    events = len(data.activity) + len(data.tickets)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        create_all_topics(broker.bootstrap)
        load_started = time.perf_counter()
        for topic, values in (
            (TOPIC_PROFILES, data.profiles),
            (TOPIC_ACTIVITY, data.activity),
            (TOPIC_TICKETS, data.tickets),
        ):
            records = [(None, v) for v in values]
            # Profiles are read to their end offsets at start: one record per batch (see README).
            one_record = topic == TOPIC_PROFILES
            asyncio.run(
                produce_records(broker.bootstrap, topic, records, one_record_batches=one_record)
            )
        load_seconds = time.perf_counter() - load_started
        ceiling_seconds = asyncio.run(
            consume_ceiling(broker.bootstrap, [TOPIC_ACTIVITY, TOPIC_TICKETS], events)
        )
        worker = WorkerProcess(worker_env(broker.bootstrap, Path(tmp)), Path(tmp) / "worker.log")
        worker.start()
        try:
            worker.wait_healthy()
            started = time.perf_counter()
            while figures_of(latest_updates(broker.bootstrap)) != expected:
                if time.perf_counter() - started > 1800:
                    raise SystemExit("pipeline did not converge in 30 minutes")
                time.sleep(0.5)
            pipeline_seconds = time.perf_counter() - started
        finally:
            worker.stop()
    result = {
        "events": events,
        "users": args.users,
        "months": args.months,
        "figures": len(expected),
        "load_seconds": round(load_seconds, 2),
        "ceiling_events_per_s": round(events / ceiling_seconds),
        "pipeline_seconds": round(pipeline_seconds, 2),
        "pipeline_events_per_s": round(events / pipeline_seconds),
        "pipeline_vs_ceiling": round(ceiling_seconds / pipeline_seconds, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:<24} {value}")


if __name__ == "__main__":
    main()
