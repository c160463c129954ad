"""TopicReader against a real broker: every partition from the beginning, then following, and a
topic created after the reader started is read from its beginning too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import ConsumerRecord

from streams.dev.broker import EmbeddedBroker
from streams.dev.produce import produce_records
from streams.dev.topics import TopicSpec, create_topics
from streams.topic_reader import MISSING_TOPIC_RETRY, TopicReader

Seen = tuple[str, bytes | None, bytes | None]


class Collected:
    """The records a reader handed over, and a way to wait for a number of them."""

    def __init__(self) -> None:
        self.records: list[Seen] = []
        self.calls = 0
        self._arrived = asyncio.Event()

    def __call__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.calls += 1
        self.records.extend((r.topic, r.key, r.value) for r in records)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.records) < count:
                self._arrived.clear()
                await self._arrived.wait()


def _records(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{i}".encode(), f"value-{prefix}{i}".encode()) for i in range(count)]


async def test_reads_every_partition_from_the_beginning_then_follows(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic, later = make_topic_name("compacted"), make_topic_name("later")
    await create_topics(broker.bootstrap, {topic: TopicSpec(3)})
    before = _records("a", 30)
    await produce_records(broker.bootstrap, topic, before, one_record_batches=True)

    collected = Collected()
    reader = TopicReader(broker.bootstrap, [topic, later], collected, name="test-reader")
    await reader.start()
    try:
        # Loaded means: read up to the end offsets found at start, on every partition. The topic
        # that does not exist yet counts as empty.
        await asyncio.wait_for(reader.wait_loaded(), 30)
        assert sorted(collected.records) == sorted((topic, k, v) for k, v in before)

        after = _records("b", 10)
        await produce_records(broker.bootstrap, topic, after, one_record_batches=True)
        await collected.wait_for(40, 30)

        await create_topics(broker.bootstrap, {later: TopicSpec(2)})
        newcomers = _records("c", 6)
        await produce_records(broker.bootstrap, later, newcomers, one_record_batches=True)
        await collected.wait_for(46, 30 + MISSING_TOPIC_RETRY)
        # Adding the new topic kept the first one's positions: nothing was read twice.
        expected = [(topic, k, v) for k, v in before + after] + [
            (later, k, v) for k, v in newcomers
        ]
        assert sorted(collected.records) == sorted(expected)
    finally:
        await reader.stop()
