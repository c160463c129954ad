"""The ingest process's lean records (streams/kafka/lean_records.py) against aiokafka's own, on a
real broker: the same records, each partition's in the same order, and after every poll the
position right after the last record it returned, also when a poll stops inside a batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.structs import ConsumerRecord

from streams.dev.broker import EmbeddedBroker
from streams.dev.produce import produce_in_bulk, produce_records
from streams.kafka import lean_records
from streams.kafka.admin import TopicSpec, create_topics

PARTITIONS = 2
# A poll takes fewer records than a batch holds: the next poll starts inside the batch.
POLL_RECORDS = 7
READ_SECONDS = 30  # a reader that skips records never gets them all: it stops here


async def _read_all(
    bootstrap: str, topic: str, expected: int, **options: Any
) -> tuple[list[Any], list[tuple[Any, ...]], list[bool]]:
    """(records, their fields per partition in order, whether each poll left each partition it
    returned at the offset after its last record) of the whole topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100, **options
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    records: list[Any] = []
    positioned: list[bool] = []
    try:
        deadline = time.monotonic() + READ_SECONDS
        while len(records) < expected and time.monotonic() < deadline:
            polled = await consumer.getmany(timeout_ms=200, max_records=POLL_RECORDS)
            for tp, part in polled.items():
                records.extend(part)
                positioned.append(await consumer.position(tp) == part[-1].offset + 1)
    finally:
        await consumer.stop()
    fields = sorted(
        (r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value)
        for r in records
    )
    return records, fields, positioned


@pytest.fixture
def stock_records_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka's own records again once the test is over (install() changes the process)."""
    monkeypatch.setattr(fetcher, "PartitionRecords", fetcher.PartitionRecords)


async def test_lean_records_are_aiokafkas_records_as_named_tuples(
    broker: EmbeddedBroker,
    make_topic_name: Callable[[str], str],
    stock_records_after: None,
) -> None:
    topic = make_topic_name("records")
    await create_topics(broker.bootstrap, {topic: TopicSpec(PARTITIONS)})
    # Multi-record batches (built in bulk) and one-record batches; keys, no keys, a tombstone.
    bulk = [(f"k{n}".encode() if n % 3 else None, f"v{n}".encode()) for n in range(500)]
    sent = await produce_in_bulk(broker.bootstrap, topic, bulk)
    sent += await produce_records(
        broker.bootstrap,
        topic,
        [(b"k-late", b"late"), (b"k-gone", None)],
        one_record_batches=True,
    )

    stock, stock_fields, stock_positioned = await _read_all(broker.bootstrap, topic, sent)
    lean_records.install()
    lean, lean_fields, lean_positioned = await _read_all(broker.bootstrap, topic, sent)

    assert len(stock) == sent == 502
    assert all(type(r) is ConsumerRecord for r in stock)
    assert all(type(r) is lean_records.LeanRecord for r in lean)
    assert lean_fields == stock_fields  # per partition, in offset order
    assert all(stock_positioned) and all(lean_positioned)
    assert len(lean_positioned) > sent // POLL_RECORDS  # polls stopped inside batches
    assert (b"k-gone", None) in {(r.key, r.value) for r in lean}


async def test_a_consumer_with_a_deserializer_keeps_aiokafkas_records(
    broker: EmbeddedBroker,
    make_topic_name: Callable[[str], str],
    stock_records_after: None,
) -> None:
    topic = make_topic_name("decoded")
    await create_topics(broker.bootstrap, {topic: TopicSpec(PARTITIONS)})
    sent = await produce_records(
        broker.bootstrap, topic, [(None, b"a"), (None, b"b")], one_record_batches=True
    )
    lean_records.install()
    records, fields, _ = await _read_all(
        broker.bootstrap, topic, sent, value_deserializer=bytes.decode
    )
    assert all(type(r) is ConsumerRecord for r in records)
    assert sorted(field[-1] for field in fields) == ["a", "b"]
