"""After a rebalance, a stream partition starts at the group's committed offset, or at its
beginning when the group has committed none (``auto_offset_reset="earliest"``).

Faust seeks its stream partitions "to committed offsets" once the tables are recovered, with
aiokafka's ``seek_to_committed``, which seeks only where an offset above 0 is committed. Records
the worker drained before that seek but never handed to its agents (a fetch answered while
recovery resumed the partitions) then stay skipped on a partition without a commit: a worker
restarted after one killed before its first commit began reading the facts past facts nobody
applied, and the figures ended short. This is plain Kafka (no broker quirk).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka


async def seek_to_committed_or_beginning(
    consumer: AIOKafkaConsumer, skip_topics: frozenset[str] = frozenset()
) -> dict[TopicPartition, int | None]:
    """Seek every assigned partition (but those of ``skip_topics``) to its committed offset, or
    to its beginning when none is committed; return the committed offsets, as aiokafka does."""
    committed: dict[TopicPartition, int | None] = {}
    uncommitted: list[TopicPartition] = []
    for tp in consumer.assignment():
        offset = await consumer.committed(tp)
        committed[tp] = offset
        if tp.topic in skip_topics:
            continue
        if offset is None:
            uncommitted.append(tp)
        else:
            consumer.seek(tp, offset)
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


class _SeeksToCommittedOrBeginning:
    """Mixin for a Faust aiokafka consumer thread (see the module's docstring)."""

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        thread: Any = self
        # Changelog partitions are positioned by table recovery itself.
        changelogs = frozenset(thread.app.tables.changelog_topics)
        committed: dict[TopicPartition, int | None] = await thread.call_thread(
            seek_to_committed_or_beginning, thread._ensure_consumer(), changelogs
        )
        return committed


def install(app: Any) -> None:
    """Give a ``faust.App``'s consumer (Faust's or the embedded broker's) that seek."""
    consumer_class = app.transport.Consumer
    base_thread = getattr(consumer_class, "thread_class", faust_aiokafka.AIOKafkaConsumerThread)
    thread_class = type(base_thread.__name__, (_SeeksToCommittedOrBeginning, base_thread), {})

    def _new_consumer_thread(self: Any) -> Any:
        return thread_class(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = type(
        consumer_class.__name__,
        (consumer_class,),
        {"thread_class": thread_class, "_new_consumer_thread": _new_consumer_thread},
    )
