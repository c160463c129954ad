"""A commit's flush waits for every record sent before it (streams/worker/delivery.py).

Faust commits a source offset after ``producer.flush()``. Its send buffer's flush gives up once a
record takes more than 100 ms to leave, so records written with ``send_soon`` (every table write,
the dedup stage's changelog chunks) could still be on their way when their source offset was
committed; a worker killed then lost them for good (figures short after a SIGKILL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.dev.broker import EmbeddedBroker
from streams.worker.delivery import AckedFlushProducer

RECORDS = 5
# One record per batch, and the first batch lingers this long before it leaves: the buffer's
# second record waits for it to drain, longer than the 100 ms Faust's flush waits.
LINGER_S = 0.4


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


async def _flush_after_sends(bootstrap: str, topic: str, producer_class: Any) -> int:
    """How many of the records sent before ``flush()`` were acknowledged when it returned."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    app = faust.App(
        f"delivery-{topic}",
        broker=f"kafka://{bootstrap}",
        producer_max_batch_size=16,
        producer_linger=LINGER_S,
        producer_acks=-1,
    )
    app.transport.Producer = producer_class
    producer = app.producer
    await producer.start()
    try:
        channel = app.topic(topic, key_type=bytes, value_type=bytes)
        sends = [
            channel.send_soon(key=b"k", value=f"record {n}".encode(), partition=0)
            for n in range(RECORDS)
        ]
        await producer.flush()
        return sum(1 for send in sends if send.done())
    finally:
        await producer.stop()


def test_flush_returns_only_once_every_record_sent_before_it_is_acknowledged(
    bootstrap: str,
) -> None:
    acked = asyncio.run(_flush_after_sends(bootstrap, "acked", AckedFlushProducer))
    assert acked == RECORDS, f"{acked} of {RECORDS} acknowledged when flush returned"


def test_fausts_own_flush_returns_with_records_still_on_their_way(bootstrap: str) -> None:
    """Why the worker needs its own: the stock producer's flush leaves records behind."""
    stock = faust.App("stock", broker=f"kafka://{bootstrap}").transport.Producer
    acked = asyncio.run(_flush_after_sends(bootstrap, "stock", stock))
    assert acked < RECORDS, "Faust's flush waited for every record: is the worker's still needed?"
