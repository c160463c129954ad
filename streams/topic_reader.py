"""Follow whole topics from the beginning: every partition, no consumer group, no commits.

The profile table and the dashboard need the complete picture of compacted topics on every worker,
whatever partitions the worker owns in the consumer group; Faust's GlobalTable would do the same
but can loop forever in recovery with several workers (its own docstring), so this is a plain
aiokafka reader. ``loaded`` is set once every partition that existed at start has been read up to
the end offset it had then; a topic that does not exist yet counts as empty and is picked up (from
its beginning) when it appears.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

log = logging.getLogger(__name__)

MISSING_TOPIC_RETRY = 5.0  # seconds between looks for topics that do not exist yet
MAX_RECORDS = 5000  # per poll; the callback gets one poll's records at a time


class TopicReader:
    """Reads ``topics`` from their beginning and hands each poll's records to ``on_records``."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        on_records: Callable[[list[ConsumerRecord[bytes, bytes]]], None],
        client_kwargs: dict[str, Any] | None = None,
        name: str = "topic-reader",
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self.on_records = on_records
        self.client_kwargs = client_kwargs or {}
        self.name = name
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_loaded(self) -> None:
        await self.loaded.wait()

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.client_kwargs,
        )
        await consumer.start()
        try:
            loop = asyncio.get_running_loop()
            assigned: set[TopicPartition] = set()
            unread: dict[TopicPartition, int] = {}  # end offset at discovery, not reached yet
            missing = list(self.topics)
            next_look = 0.0
            while True:
                if missing and loop.time() >= next_look:
                    found = await _new_partitions(consumer, missing)
                    next_look = loop.time() + MISSING_TOPIC_RETRY
                    if found:
                        unread.update(await _add_partitions(consumer, assigned, found))
                        assigned |= found
                        missing = [t for t in missing if t not in {tp.topic for tp in found}]
                if not assigned:
                    self._set_loaded(assigned)  # nothing exists yet: an empty topic is loaded
                    await asyncio.sleep(MISSING_TOPIC_RETRY)
                    continue
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
                records = [record for batch in batches.values() for record in batch]
                if records:
                    self.on_records(records)
                if unread:
                    unread = {
                        tp: end for tp, end in unread.items() if await consumer.position(tp) < end
                    }
                if not unread:
                    self._set_loaded(assigned)
        finally:
            await consumer.stop()

    def _set_loaded(self, assigned: set[TopicPartition]) -> None:
        if not self.loaded.is_set():
            log.info(
                "%s: loaded %s (%d partitions)", self.name, ", ".join(self.topics), len(assigned)
            )
            self.loaded.set()


async def _new_partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> set[TopicPartition]:
    # The whole cluster's metadata: a consumer's own tracks only the topics it is assigned.
    cluster = await consumer._client.fetch_all_metadata()
    return {
        TopicPartition(topic, partition)
        for topic in topics
        for partition in cluster.partitions_for_topic(topic) or ()
    }


async def _add_partitions(
    consumer: AIOKafkaConsumer, assigned: set[TopicPartition], found: set[TopicPartition]
) -> dict[TopicPartition, int]:
    """Assign ``found`` from the beginning, keeping the positions already reached; end offsets."""
    # assign() forgets positions, so the partitions read so far are sought back to theirs.
    positions = {tp: await consumer.position(tp) for tp in assigned}
    consumer.assign(sorted(assigned | found))
    for tp, offset in positions.items():
        consumer.seek(tp, offset)
    await consumer.seek_to_beginning(*found)
    end = await consumer.end_offsets(sorted(found))
    return {tp: offset for tp, offset in end.items() if offset > 0}
