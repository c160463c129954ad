"""Read a whole (compacted) topic into memory, then keep following it.

Every partition is assigned directly (no consumer group, no committed offsets): each worker needs
the whole topic, from the beginning, at every start. Faust's GlobalTable would do the same but can
loop forever in recovery with several workers (its own docstring), so this is a plain aiokafka
reader. Used for the user-profile table (``streams/worker/profiles.py``) and the published alert
states (``cci-alerts``, ``streams/worker/alert_publisher.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.loops import Loop

log = logging.getLogger(__name__)

MISSING_TOPIC_RETRY = 5.0  # seconds between looks for a topic that does not exist yet
END_OFFSETS_RETRY = 1.0  # seconds before asking again for end offsets the broker did not give


class TopicFollower(Loop):
    """Feeds every record of ``topic`` to ``apply(key, value)``, in order per partition.

    ``loaded`` is set once everything up to the end offsets found at start has been applied.
    ``in_sync`` is the same for the end offsets found at the last ``catch_up()`` request (start
    counts as one), so a caller can wait until it has seen what others published before it.

    A record whose ``apply`` raises is logged, passed to ``on_apply_error`` and skipped: one bad
    record must not stop following. Should following itself fail, the error is logged, ``failed``
    is set (until it is in sync again), so the owner can show it rather than wait for ``loaded``
    for ever, and following starts again from the beginning after a back-off
    (``streams/loops.py``).
    """

    what = "following a topic"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        apply: Callable[[bytes | None, bytes | None], None],
        client_kwargs: dict[str, Any] | None = None,
        after_poll: Callable[[], None] | None = None,
        true_ends: bool = False,
        on_apply_error: Callable[[Exception], None] | None = None,
    ) -> None:
        super().__init__()
        self.what = f"following {topic}"
        self.bootstrap = bootstrap
        self.topic = topic
        self.apply = apply
        # Called once per poll that applied records: lets a reader react to a burst once.
        self.after_poll = after_poll
        self.on_apply_error = on_apply_error
        self.client_kwargs = client_kwargs or {}
        # The embedded broker's reported end lags after a multi-record batch
        # (streams/kafka/embedded.py).
        self.true_ends = true_ends
        self.loaded = asyncio.Event()
        self.failed = asyncio.Event()
        self.in_sync = asyncio.Event()
        self._sync_requested = True

    async def on_failure(self, exc: Exception) -> None:
        self.failed.set()

    def catch_up(self) -> None:
        """Ask to apply everything up to the current end offsets; ``in_sync`` clears until then."""
        self._sync_requested = True
        self.in_sync.clear()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.client_kwargs,
        )
        await consumer.start()
        try:
            partitions = await _partitions_of(consumer, self.topic)
            while not partitions:
                # The topic may not exist yet (an empty topic is a valid state): nothing to load.
                self._sync_requested = False
                self.loaded.set()
                self.in_sync.set()
                await asyncio.sleep(MISSING_TOPIC_RETRY)
                partitions = await _partitions_of(consumer, self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self.catch_up()  # the topic may have appeared after a first, empty, load
            applied = 0
            pending: dict[TopicPartition, int] = {}
            while not self.should_stop:
                if self._sync_requested:
                    self._sync_requested = False
                    try:
                        end = await consumer.end_offsets(tps)
                        if self.true_ends:
                            from streams.kafka.embedded import true_end_offsets

                            end = await true_end_offsets(self.bootstrap, end, self.client_kwargs)
                    except KafkaError as exc:
                        # Stay out of sync (callers wait on it) and ask again: never give up.
                        log.warning("%s: no end offsets yet (%r), retrying", self.topic, exc)
                        self._sync_requested = True
                        await asyncio.sleep(END_OFFSETS_RETRY)
                        continue
                    pending = {tp: offset for tp, offset in end.items() if offset > 0}
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                polled = 0
                for records in batches.values():
                    for record in records:
                        try:
                            self.apply(record.key, record.value)
                        except Exception as exc:
                            log.exception(
                                "%s: the record at partition %d offset %d could not be applied;"
                                " skipped",
                                self.topic,
                                record.partition,
                                record.offset,
                            )
                            if self.on_apply_error is not None:
                                self.on_apply_error(exc)
                    polled += len(records)
                applied += polled
                if polled and self.after_poll is not None:
                    self.after_poll()
                if pending:
                    pending = {
                        tp: end_offset
                        for tp, end_offset in pending.items()
                        if await consumer.position(tp) < end_offset
                    }
                if not pending and not self._sync_requested:
                    if not self.loaded.is_set():
                        log.info("%s loaded: %d records", self.topic, applied)
                        self.loaded.set()
                    self.in_sync.set()
                    self.failed.clear()
                    self.progressed()
        finally:
            await consumer.stop()


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    # The whole cluster's metadata: an unassigned consumer's own metadata tracks no topics, so a
    # topic created after the start would never be seen through it.
    cluster = await consumer._client.fetch_all_metadata()
    return set(cluster.partitions_for_topic(topic) or ())


async def read_topic(
    bootstrap: str,
    topic: str,
    client_kwargs: dict[str, Any] | None = None,
    *,
    true_ends: bool = False,
) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of ``topic`` (key, value), partition by partition, from the beginning up to
    the end offsets found at the start: a ``TopicFollower`` stopped once it has loaded. A missing
    topic reads as empty; a read that fails raises ``RuntimeError`` with the reason."""
    records: list[tuple[bytes | None, bytes | None]] = []
    follower = TopicFollower(
        bootstrap,
        topic,
        lambda key, value: records.append((key, value)),
        client_kwargs,
        true_ends=true_ends,
    )
    await follower.start()
    try:
        loaded = asyncio.ensure_future(follower.loaded.wait())
        failed = asyncio.ensure_future(follower.failed.wait())
        await asyncio.wait({loaded, failed}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in (loaded, failed):
            waiting.cancel()
        if not follower.loaded.is_set():
            raise RuntimeError(f"reading {topic} failed: {follower.last_error}")
    finally:
        await follower.stop()
    return records
