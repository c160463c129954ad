"""After recovery a stream partition starts at its committed offset, or at its beginning when the
group committed none (streams/worker/positions.py).

A worker restarted after one killed before its first commit drained the facts from aiokafka while
recovery resumed the partitions, did not hand them to its agents, and then "sought to committed
offsets" with aiokafka's ``seek_to_committed``: a no-op without a commit above 0, so it read on
past facts nobody had applied (figures short after a SIGKILL, 1 run in 4 to 8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from streams.dev.broker import EmbeddedBroker
from streams.worker.positions import SeekLedger, seek_positions, seek_to_committed_or_beginning

RECORDS = 6
# partition → the group's committed offset before the restart (None: nothing committed)
COMMITTED: dict[int, int | None] = {0: None, 1: 0, 2: 2}

Seek = Callable[[AIOKafkaConsumer], Awaitable[Any]]


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


async def _first_offsets_after_seek(bootstrap: str, topic: str, seek: Seek) -> dict[int, int]:
    """Drain every record (handing none on), seek "to committed", and return, per partition, the
    offset the next fetch starts at."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, len(COMMITTED), 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition in COMMITTED:
            for number in range(RECORDS):
                await producer.send_and_wait(topic, b"%d" % number, partition=partition)
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, p) for p in COMMITTED]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        commits = {tp: OffsetAndMetadata(COMMITTED[tp.partition], "") for tp in tps}
        await consumer.commit({tp: o for tp, o in commits.items() if o.offset is not None})
        for tp in tps:
            consumer.seek(tp, COMMITTED[tp.partition] or 0)
        drained = {tp: 0 for tp in tps}
        while any(consumer_at < RECORDS for consumer_at in drained.values()):
            batches = await consumer.getmany(timeout_ms=2000)
            for tp, records in batches.items():
                drained[tp] = records[-1].offset + 1
        await seek(consumer)
        first: dict[int, int] = {}
        while len(first) < len(tps):
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                break
            for tp, records in batches.items():
                first.setdefault(tp.partition, records[0].offset)
        return first
    finally:
        await consumer.stop()


def test_a_partition_without_a_commit_starts_again_at_its_beginning(bootstrap: str) -> None:
    ledger = SeekLedger()

    async def seek(consumer: AIOKafkaConsumer) -> Any:
        return await seek_to_committed_or_beginning(consumer, ledger=ledger)

    first = asyncio.run(_first_offsets_after_seek(bootstrap, "start-ours", seek))
    assert first == {0: 0, 1: 0, 2: 2}
    # The ledger holds the positions set, all from one seek: fetches before it are dropped.
    assert {tp.partition: seek for tp, seek in ledger.seeks.items()} == {
        0: (1, 0),
        1: (1, 0),
        2: (1, 2),
    }


def test_aiokafkas_own_seek_leaves_the_drained_records_skipped(bootstrap: str) -> None:
    # The mechanism the fix is for: no commit, or a commit of 0, seeks nowhere.
    first = asyncio.run(
        _first_offsets_after_seek(
            bootstrap, "start-aiokafka", lambda consumer: consumer.seek_to_committed()
        )
    )
    assert first == {2: 2}


def test_a_stuck_partition_is_sought_back_to_its_commit_or_its_beginning(bootstrap: str) -> None:
    # Rule 3's seek (``watch_commits``): records drained and never handed on are fetched again.
    ledger = SeekLedger()

    async def seek(consumer: AIOKafkaConsumer) -> Any:
        positions = {tp: COMMITTED[tp.partition] for tp in consumer.assignment()}
        return await seek_positions(consumer, positions, ledger)

    first = asyncio.run(_first_offsets_after_seek(bootstrap, "start-stuck", seek))
    assert first == {0: 0, 1: 0, 2: 2}
    assert {tp.partition: seek for tp, seek in ledger.seeks.items()} == {
        0: (1, 0),
        1: (1, 0),
        2: (1, 2),
    }
