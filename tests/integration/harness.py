"""Drive the real pipeline from tests: worker processes, topics, and reading cci-updates back."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from prometheus_client.parser import text_string_to_metric_families

from streams.bench.measure import describe_difference
from streams.dev.broker import free_port
from streams.dev.generate import Dataset, generate
from streams.dev.produce import key_of, produce_records
from streams.dev.worker_process import WorkerProcess as WorkerProcess  # re-exported for tests
from streams.dev.worker_process import worker_environment
from streams.kafka import follow
from streams.kafka.admin import create_topics
from streams.kafka.embedded import true_end_offsets
from streams.pipeline.emit import update_value
from streams.pipeline.recount import recount
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    load_settings,
)
from streams.sink.rows import SEGMENT_COLUMNS, SEGMENT_TABLE, segment_row
from streams.store.clickhouse import open_store
from streams.topics import topic_catalogue

Figures = dict[tuple[str, str, str], tuple[int, int]]


# The embedded broker holds a group's first JoinGroup for about half the session timeout
# (docs/embedded-broker.md), and a worker joins two groups one after the other: 6 s (Kafka's
# smallest by default, group.min.session.timeout.ms) instead of 10 s starts each worker ~4 s
# sooner.
TEST_SESSION_TIMEOUT = "6"
FETCH_BYTES = 1 << 24  # batch_sizes: a fetch's limit, above any batch the tests produce


def worker_env(bootstrap: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The tests' worker: state and store in ``data_dir``, emitting quickly and joining its groups
    sooner; ``extra`` last."""
    return worker_environment(
        bootstrap,
        data_dir=data_dir,
        clickhouse_url=f"chdb://{data_dir / 'clickhouse'}",
        # Unbuffered: the log of a worker killed with SIGKILL ends where the worker did.
        **{
            "CCI_EMIT_INTERVAL": "0.3",
            # One ingest process (the default is 2): a lighter worker for the tests that are
            # about something else; test_ingest_process.py runs two.
            "CCI_INGEST_PROCESSES": "1",
            "CCI_LOG_LEVEL": "INFO",
            "CCI_SESSION_TIMEOUT": TEST_SESSION_TIMEOUT,
            "PYTHONUNBUFFERED": "1",
            **extra,
        },
    )


def run_cci(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``cci ARGS`` as a user types it, in ``cwd`` with exactly ``env``; killed after
    ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def store_with_figures(
    tmp_path: Path, figures: Mapping[tuple[int, str, str], tuple[int, int]], emitted_at: datetime
) -> dict[str, str]:
    """A closed embedded store holding ``figures`` ((month, dimension, segment) → (tickets,
    active users)) as the sink writes them, and the env of a CLI that opens it with no worker."""
    url = f"chdb://{tmp_path / 'clickhouse'}"
    with open_store(url) as store:
        store.apply_schema()
        rows = [
            segment_row(orjson.dumps(update_value(month, *segment, *counts, 1, emitted_at)))
            for (month, *segment), counts in figures.items()
        ]
        store.insert(SEGMENT_TABLE, rows, SEGMENT_COLUMNS)
    # Closed again, so a CLI process may open it; nothing listens on the web port.
    return {"PATH": "/usr/bin:/bin", "CCI_CLICKHOUSE_URL": url, "CCI_WEB_PORT": str(free_port())}


def create_all_topics(bootstrap: str, **env: str) -> None:
    settings = load_settings({"CCI_KAFKA_BOOTSTRAP": bootstrap, **env})
    asyncio.run(create_topics(bootstrap, topic_catalogue(settings)))


def produce(bootstrap: str, topic: str, values: Iterable[bytes]) -> int:
    """Produce values keyed by their user_id (as `cci produce` does)."""
    records = [(key_of(v), v) for v in values]
    return asyncio.run(produce_records(bootstrap, topic, records, one_record_batches=True))


def exactness_dataset(seed: int, users: int = 400, months: int = 3) -> tuple[Dataset, Figures]:
    """Generated traffic and the recount of its figures (the exactness tests)."""
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=users, months=months, seed=seed, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    assert len(expected) > 50 and any(t for t, _ in expected.values())
    return data, expected


def produce_events(bootstrap: str, data: Dataset, part: slice = slice(None)) -> None:
    """Produce a data set's activity and tickets (or a slice of each)."""
    produce(bootstrap, TOPIC_ACTIVITY, data.activity[part])
    produce(bootstrap, TOPIC_TICKETS, data.tickets[part])


def three_workers_on_half_the_activity(
    pipeline: Any, data: Dataset
) -> tuple[tuple[WorkerProcess, WorkerProcess, WorkerProcess], int]:
    """The profiles, workers "first", "second" and "third", then the first half of the activity;
    the workers and where that half ends."""
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    workers = (pipeline.worker("first"), pipeline.worker("second"), pipeline.worker("third"))
    half = len(data.activity) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[:half])
    return workers, half


def count_half_the_tickets(
    pipeline: Any, data: Dataset, workers: Iterable[WorkerProcess]
) -> tuple[int, Figures]:
    """Every activity and the first half of the tickets, until ``workers`` publish their exact
    figures; where that half ends, and those figures."""
    half = len(data.tickets) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[:half])
    figures = recount(
        data.activity, data.tickets[:half], data.profiles, datetime.now(UTC), load_settings({})
    ).figures
    wait_for_figures(pipeline.bootstrap, figures, workers=workers)
    return half, figures


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of a topic, from the beginning to the end offsets (the tests' broker is the
    embedded one, whose reported ends lag: streams/kafka/embedded.py)."""
    return asyncio.run(follow.read_topic(bootstrap, topic, true_ends=True))


def partitions_with_records(bootstrap: str, topic: str) -> int:
    """How many partitions of ``topic`` hold at least one record (end offset above 0)."""

    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not tps:
                return 0
            end = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
            return sum(1 for tp in tps if end[tp] > 0)
        finally:
            await consumer.stop()

    return asyncio.run(count())


async def batch_sizes(bootstrap: str, tp: TopicPartition) -> list[int]:
    """The records of each batch of a partition, in order: how it was produced, as the broker
    stores it (a consumer hands over records, not batches). Raw fetches from each batch's end."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(tp)
        sizes: list[int] = []
        offset = 0
        while True:
            request = FetchRequest(
                100, 1, FETCH_BYTES, 0, [(tp.topic, [(tp.partition, offset, FETCH_BYTES)])]
            )
            response = await client.send(leader, request)
            records = MemoryRecords(response.topics[0][1][0][-1])
            start = offset
            while (batch := records.next_batch()) is not None:
                count = sum(1 for _ in batch)
                if batch.base_offset + count > offset:  # a fetch may repeat the batch it is in
                    sizes.append(count)
                    offset = batch.base_offset + count
            if offset == start:
                return sizes
    finally:
        await client.close()


def wait_all_committed(bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
    """Wait until ``group`` has committed every record of ``topic`` (its true ends)."""

    async def behind() -> dict[int, tuple[int | None, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
            committed = {tp: await consumer.committed(tp) for tp in tps}
            return {
                tp.partition: (committed[tp], ends[tp])
                for tp in tps
                if (committed[tp] or 0) < ends[tp]
            }
        finally:
            await consumer.stop()

    left: dict[int, tuple[int | None, int]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = asyncio.run(behind())
        if not left:
            return
        time.sleep(0.5)
    raise AssertionError(f"{group} has not committed all of {topic}: (committed, end) {left}")


def dump_topics(bootstrap: str, folder: Path) -> None:
    """Every record of every topic as JSON lines (partition, offset, key, value) in ``folder``:
    what a failed exactness run needs to find the stage that lost something."""

    async def topics() -> dict[str, list[TopicPartition]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            return {
                topic: [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
                for topic in await consumer.topics()
                if consumer.partitions_for_topic(topic) and not topic.startswith("__")
            }
        finally:
            await consumer.stop()

    async def dump(tps: list[TopicPartition]) -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            reported = await consumer.end_offsets(tps)
            end = await true_end_offsets(bootstrap, reported)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = {str(tp.partition): [reported[tp], end[tp]] for tp in tps}
            lines = [orjson.dumps({"end": ends})]
            deadline = time.monotonic() + 60
            seen: dict[str, int] = {}
            # Past the probed end too, until a poll brings nothing: a probe that stops short
            # is one of the things a failed run may be looking for.
            while time.monotonic() < deadline:
                batches = await consumer.getmany(*tps, timeout_ms=2000)
                positions = {tp: await consumer.position(tp) for tp in tps}
                if not batches and all(positions[tp] >= end[tp] for tp in tps):
                    break
                for tp, batch in batches.items():
                    seen[str(tp.partition)] = batch[-1].offset + 1
                    lines.extend(
                        orjson.dumps(
                            {
                                "p": tp.partition,
                                "o": r.offset,
                                "k": _text(r.key),
                                "v": _text(r.value),
                            }
                        )
                        for r in batch
                    )
            lines[0] = orjson.dumps({"end": ends, "seen": seen})
            return lines
        finally:
            await consumer.stop()

    async def committed(group: str, tps: list[TopicPartition]) -> dict[str, int | None]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            return {f"{tp.topic}/{tp.partition}": await consumer.committed(tp) for tp in tps}
        finally:
            await consumer.stop()

    folder.mkdir(parents=True, exist_ok=True)
    every_topic = asyncio.run(topics())
    for topic, tps in every_topic.items():
        lines = asyncio.run(dump(tps))
        (folder / f"{topic}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    every_tp = [tp for tps in every_topic.values() for tp in tps]
    offsets = {group: asyncio.run(committed(group, every_tp)) for group in ("cci", "cci-ingest")}
    (folder / "committed-offsets.json").write_bytes(orjson.dumps(offsets))


def _text(raw: bytes | None) -> str | None:
    """UTF-8 as is; anything else (msgpack facts) as "base64:...", so that it decodes again."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def latest_updates(bootstrap: str) -> dict[str, dict[str, Any]]:
    """The newest cci-updates value per key, asserting that versions rise strictly per key."""
    latest: dict[str, dict[str, Any]] = {}
    for key, value in read_topic(bootstrap, TOPIC_UPDATES):
        assert key is not None and value is not None
        record = orjson.loads(value)
        previous = latest.get(key.decode())
        if previous is not None:
            assert record["version"] > previous["version"], (key, previous, record)
        latest[key.decode()] = record
    return latest


def figures_of(updates: Mapping[str, Mapping[str, Any]]) -> Figures:
    """(month, dimension, segment) → (tickets, active_users); emptied segments (0, 0) dropped."""
    return {
        (u["month"], u["dimension"], u["segment"]): (u["tickets"], u["active_users"])
        for u in updates.values()
        if u["tickets"] or u["active_users"]
    }


def wait_for_figures(
    bootstrap: str,
    expected: Figures,
    timeout: float = 90.0,
    workers: Iterable[WorkerProcess] = (),
) -> Figures:
    """Poll cci-updates until its latest figures equal ``expected``; fail with the difference
    and the diagnostics of ``workers``."""
    deadline = time.monotonic() + timeout
    actual: Figures = {}
    while time.monotonic() < deadline:
        actual = figures_of(latest_updates(bootstrap))
        if actual == expected:
            return actual
        time.sleep(1.0)
    details = ["figures differ:", *describe_difference(expected, actual, limit=20)]
    details += [worker.diagnostics() for worker in workers if worker.process is not None]
    for worker in list(workers)[:1]:
        folder = worker.log_path.parent / "topics"
        try:
            dump_topics(bootstrap, folder)
            details.append(f"every topic of the failed run: {folder}")
        except Exception as exc:  # the difference above matters more than the dump
            details.append(f"the topics could not be kept: {exc!r}")
    raise AssertionError("\n".join(details))


def wait_until(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(message)


def samples_by_label(page: str, name: str, label: str) -> dict[str, float]:
    """The samples of metric ``name`` (a counter by its ``_total`` sample) in a Prometheus text
    page, keyed by the value of ``label``."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name in (name, f"{name}_total") and label in sample.labels:
                values[sample.labels[label]] = sample.value
    return values


def wait_consumed(
    worker: WorkerProcess, produced: Mapping[str, int], timeout: float = 90.0
) -> dict[str, float]:
    """Poll the worker's /metrics until its ingest has read at least ``produced[topic]`` records
    of each topic (``cci_events_consumed_total``, counted since the worker started) and has no
    lag on them (``cci_consumer_lag_records``). Figures compared before that prove nothing
    about the records still unread."""
    deadline = time.monotonic() + timeout
    consumed: dict[str, float] = {}
    lag: dict[str, float] = {}
    while time.monotonic() < deadline:
        page = worker.get("/metrics")
        consumed = samples_by_label(page, "cci_events_consumed", "topic")
        lag = samples_by_label(page, "cci_consumer_lag_records", "topic")
        if all(
            consumed.get(topic, 0) >= count and lag.get(topic) == 0
            for topic, count in produced.items()
        ):
            return consumed
        time.sleep(0.5)
    raise AssertionError(
        f"ingest did not read everything produced: produced {dict(produced)}, consumed "
        f"{consumed}, lag {lag}\n{worker.diagnostics()}"
    )
