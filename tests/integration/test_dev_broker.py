"""The development broker, topic creation and the JSON-lines producer against a real Tansu."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.dev.broker import LOOPBACK, BrokerStartError, EmbeddedBroker, free_port
from streams.dev.produce import produce_jsonl, produce_records
from streams.kafka.admin import TopicSpec, create_topics
from tests.integration.harness import batch_sizes

READ_TIMEOUT_S = 20.0
# After the expected count arrives, poll this long more to catch records that should not exist.
SETTLE_S = 0.5
PIPED_LINES = 500
FEW_BATCHES_LINES = 3000  # ~100 KiB: one batch per partition, then its last record alone


async def read_topic(
    bootstrap: str, topic: str, expected: int
) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[TopicPartition, int]]:
    """All records of `topic` and its end offsets, with partitions assigned by hand.

    No consumer group: Tansu holds a group's first JoinGroup for half the session timeout.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()  # fills the metadata cache that partitions_for_topic reads
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} has no partitions in the metadata"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        settle_until = time.monotonic() + SETTLE_S
        while time.monotonic() < settle_until:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
        end_offsets = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return records, end_offsets


async def test_broker_answers_kafka_metadata(broker: EmbeddedBroker) -> None:
    assert broker.bootstrap == f"{LOOPBACK}:{broker.port}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [(LOOPBACK, broker.port)]


def test_stop_ends_the_process_and_is_idempotent() -> None:
    broker = EmbeddedBroker().start()
    process = broker.process
    assert process is not None and broker.running

    assert broker.stop() is not None
    assert broker.stop() is None
    assert process.poll() is not None
    assert not broker.running
    with pytest.raises(OSError), socket.create_connection((LOOPBACK, broker.port), timeout=1):
        pass


def test_start_on_a_busy_port_fails_with_a_clear_error() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((LOOPBACK, port))
        squatter.listen()
        broker = EmbeddedBroker(port)
        with pytest.raises(BrokerStartError, match="in use"):
            broker.start()
    assert not broker.running


async def test_create_topics_is_idempotent(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    events, changelog, later = (make_topic_name(label) for label in ("events", "log", "later"))
    specs = {
        events: TopicSpec(partitions=3),
        changelog: TopicSpec(configs={"cleanup.policy": "compact"}),
    }

    first = await create_topics(broker.bootstrap, specs)
    second = await create_topics(broker.bootstrap, specs, client_kwargs={"client_id": "cci-test"})
    third = await create_topics(broker.bootstrap, {**specs, later: TopicSpec()})

    assert first.created == tuple(sorted([events, changelog])) and first.existing == ()
    assert second.created == () and second.existing == tuple(sorted([events, changelog]))
    assert third.created == (later,) and third.existing == second.existing

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([events])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changelog)]
        )
    finally:
        await admin.close()
    assert len(described["partitions"]) == 3
    [resource] = response.resources
    configs = {entry[0]: entry[1] for entry in resource[4]}
    # The spec's own config wins over the base one; the base one is sent too.
    assert configs["cleanup.policy"] == "compact"
    assert configs["retention.ms"] == str(7 * 24 * 60 * 60 * 1000)


async def test_produce_jsonl_lands_every_line_keyed_by_user_id(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = make_topic_name("in")
    await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=3)})
    lines = [
        b'{"user_id": "u-1", "channel": "phone"}',
        b'{"user_id": "u-2", "channel": "chat"}',
        b'{"user_id": "u-1", "channel": "mail"}',
        '{"user_id": "ü-3", "channel": "chat"}'.encode(),
        b'{"user_id": 42, "channel": "phone"}',
        b'{"user_id": "u-4", "channel": ',  # truncated: not JSON
        b'{"channel": "phone"}',  # no user_id
        b'["u-5"]',  # JSON, but not an object
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    produced = await produce_jsonl(broker.bootstrap, topic, path, embedded_broker=True)
    records, end_offsets = await read_topic(broker.bootstrap, topic, expected=len(lines))

    assert produced == len(lines)
    assert sum(end_offsets.values()) == len(lines)
    assert sorted((r.value, r.key) for r in records) == sorted(
        [
            (lines[0], b"u-1"),
            (lines[1], b"u-2"),
            (lines[2], b"u-1"),
            (lines[3], "ü-3".encode()),
            (lines[4], b"42"),
            (lines[5], None),
            (lines[6], None),
            (lines[7], None),
        ]
    )
    # One key, one partition: a user's events stay in order for the pipeline.
    u1_records = [r for r in records if r.key == b"u-1"]
    assert len({r.partition for r in u1_records}) == 1
    assert [r.value for r in sorted(u1_records, key=lambda r: r.offset)] == [lines[0], lines[2]]


async def test_produce_jsonl_loads_the_embedded_broker_in_few_batches(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    """`cci produce` on the embedded broker: each fetch of a partition lists every batch it holds,
    so a file loaded one record per batch (as it was) cost the broker on every fetch for as long
    as anyone followed the topic (the profile table: p99 latency 550 ms against 315 ms in `cci
    bench`). Few batches now, each partition's last of one record: its reported end is true."""
    topic = make_topic_name("bulk")
    await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=3)})
    lines = [b'{"user_id": "u-%d", "plan": "pro"}' % i for i in range(FEW_BATCHES_LINES)]

    produced = await produce_jsonl(broker.bootstrap, topic, lines, embedded_broker=True)
    records, end_offsets = await read_topic(broker.bootstrap, topic, expected=len(lines))
    batches = [await batch_sizes(broker.bootstrap, tp) for tp in sorted(end_offsets)]

    assert produced == len(records) == sum(end_offsets.values()) == FEW_BATCHES_LINES
    assert all(len(sizes) == 2 and sizes[-1] == 1 for sizes in batches), batches


def test_cci_produce_reads_a_pipe(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    """`cat events.jsonl | cci produce /dev/stdin`: a pipe can be read once, so the size check
    that reads a file before sending it skips a pipe (it produced nothing when it did not)."""
    topic = make_topic_name("piped")
    asyncio.run(create_topics(broker.bootstrap, {topic: TopicSpec(partitions=2)}))
    lines = b"".join(b'{"user_id": "u-%d"}\n' % i for i in range(PIPED_LINES))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CCI_")},
        "CCI_KAFKA_BOOTSTRAP": broker.bootstrap,
        "CCI_EMBEDDED_BROKER": "true",
    }

    result = subprocess.run(
        [sys.executable, "-m", "streams", "produce", "/dev/stdin", "--topic", topic],
        input=lines,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    records, end_offsets = asyncio.run(read_topic(broker.bootstrap, topic, expected=PIPED_LINES))

    assert result.returncode == 0, result.stderr
    assert f"produced {PIPED_LINES} records".encode() in result.stdout
    assert len(records) == sum(end_offsets.values()) == PIPED_LINES


async def test_produce_jsonl_skips_blank_lines_and_strips_line_endings(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic = make_topic_name("in")
    await create_topics(broker.bootstrap, {topic: TopicSpec()})
    lines = ['{"user_id": "a"}\r\n', "\n", "   \n", '{"user_id": "b"}']

    produced = await produce_jsonl(broker.bootstrap, topic, lines, embedded_broker=True)
    records, _ = await read_topic(broker.bootstrap, topic, expected=2)

    assert produced == 2
    assert [(r.key, r.value) for r in records] == [
        (b"a", b'{"user_id": "a"}'),
        (b"b", b'{"user_id": "b"}'),
    ]


async def test_one_record_batches_keep_the_high_watermark_exact(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    """Tansu's ListOffsets answers base offset of the last batch + 1; one-record batches fix it.

    With normal batching the figure is printed, not asserted: real Kafka is right either way and
    the embedded broker's answer depends on how the producer happened to batch.
    """
    exact, batched = make_topic_name("one-record"), make_topic_name("batched")
    await create_topics(broker.bootstrap, {exact: TopicSpec(), batched: TopicSpec()})
    records = [(f"u-{i}".encode(), b'{"n": %d}' % i) for i in range(50)]

    assert await produce_records(broker.bootstrap, exact, records, one_record_batches=True) == 50
    exact_records, exact_end = await read_topic(broker.bootstrap, exact, expected=50)
    assert list(exact_end.values()) == [50]
    assert len(exact_records) == 50

    assert await produce_records(broker.bootstrap, batched, records, one_record_batches=False) == 50
    batched_records, batched_end = await read_topic(broker.bootstrap, batched, expected=50)
    print(
        f"normal batching: end_offsets={list(batched_end.values())} for 50 records, "
        f"a consumer read {len(batched_records)}"
    )
