"""Stage 6 of the dataflow: figures and deduplicated facts → ClickHouse, at least once, no loss.

    cci-updates ──────────────┐
    {app}-dedup-changelog ────┴─ sink (its own consumer group) ─ ClickHouse tables

The sink runs inside the worker with its own Kafka consumer (one group per store, see
``sink_group``; no auto-commit), so it neither slows the pipeline nor depends on it: a ClickHouse
outage only makes the sink lag. Its shape is Quix Streams' sink: ``add()`` buffers rows,
``flush()`` writes them and returns only once ClickHouse has every one (retrying with back-off
for as long as it takes), and only then are the offsets behind them committed. A crash before
the commit makes the next owner of the partition read and write the same rows again, which the
tables absorb: ``ReplacingMergeTree`` keeps one row per key (the highest version), so a row
written twice is still one row in ``FINAL``, and an identical retried batch is dropped on insert
(``non_replicated_deduplication_window``).

Which rows each record becomes: ``streams/sink/rows.py``; the buffer and its retried writes:
``streams/sink/batch.py``; this module is the consumer loop around them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streams import domain, metrics
from streams.kafka.broker_watch import stop_for_lost_data
from streams.loops import Loop
from streams.redaction import redact_url
from streams.settings import TOPIC_UPDATES, Settings
from streams.sink.batch import Batch, ClickHouseSink, SinkStopped, first_line
from streams.sink.rows import OFFSETS_TABLE
from streams.store.clickhouse import Store, StoreError, open_store
from streams.store.embedded import embedded_path
from streams.topics import changelog_topic

log = logging.getLogger(__name__)


def sink_group(settings: Settings) -> str:
    """The sink's consumer group: committed offsets say what one store has, so one group per
    store. Workers writing to a server share ``{app_id}-sink`` and each row is written once; an
    embedded store belongs to one worker, so each gets its own group and a complete copy (with a
    shared group, every worker's store would hold only its share of the partitions)."""
    path = embedded_path(settings.clickhouse_url)
    if path is None:
        return f"{settings.app_id}-sink"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"{settings.app_id}-sink-{digest}"


class SinkRunner(Loop, ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumes the sink's topics into a ``ClickHouseSink``, committing after each flush; a
    failure restarts the consumer from the committed offsets after a back-off."""

    what = "sink"
    stop_within = 15.0

    def __init__(
        self,
        settings: Settings,
        *,
        store_factory: Callable[[str], Store] | None = None,
        updates_topic: str = TOPIC_UPDATES,
        changelog: str | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 15.0,
        on_lost_data: Callable[[str], None] = stop_for_lost_data,
    ) -> None:
        super().__init__(backoff_initial=backoff_initial, backoff_max=backoff_max)
        self.settings = settings
        self.on_lost_data = on_lost_data
        self.store: Store | None = None  # set once open and migrated; the query page reads it
        # The store's URL → an open store; by default on CCI_CLICKHOUSE_CLUSTER when it is set.
        self._store_factory = store_factory or functools.partial(
            open_store, cluster=settings.clickhouse_cluster
        )
        self.sink = ClickHouseSink(
            self._current_store,
            domain.user_dimensions(settings.extra_dimensions),
            updates_topic=updates_topic,
            changelog_topic=changelog or changelog_topic(settings.app_id),
            batch_rows=settings.sink_batch_rows,
            flush_seconds=settings.sink_flush_seconds,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            offsets_group=sink_group(settings),
        )
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()  # consumer started with the store open
        self._lock = asyncio.Lock()  # a flush+commit and a rebalance never interleave
        self._read_next: dict[TopicPartition, int] = {}  # per partition: last offset read + 1

    def _current_store(self) -> Store:
        if self.store is None:
            raise StoreError("the store is not open")
        return self.store

    # --- lifecycle (streams/loops.py) ----------------------------------------------------------

    async def run(self) -> None:
        """Open the store (retried until it opens), then consume until stopped."""
        if self.store is None:
            await self._open_store()
            if self.store is None:  # stopped before it opened
                return
        try:
            await self._run_consumer()
        except SinkStopped as exc:
            log.warning("sink stopped before ClickHouse confirmed a batch: %s", exc)

    async def on_failure(self, exc: Exception) -> None:
        self.sink.batch = Batch()  # uncommitted: read again after the restart
        await self._close_consumer()

    async def on_stop(self) -> None:
        """Write what was read (one attempt: unconfirmed rows are resent after a restart),
        commit it, and close the consumer and the store."""
        self.sink.stopping = True
        await super().on_stop()
        await self._close_consumer()
        if self.store is not None:
            store, self.store = self.store, None
            await asyncio.to_thread(store.close)

    async def _run_consumer(self) -> None:
        self.consumer = self._consumer()
        await self.consumer.start()
        self.ready.set()
        log.info(
            "sink: %s and %s → %s (group %s)",
            self.sink.updates_topic,
            self.sink.changelog_topic,
            redact_url(self.settings.clickhouse_url),
            self._group_id,
        )
        await self._consume()

    @property
    def _group_id(self) -> str:
        return sink_group(self.settings)

    async def _open_store(self) -> None:
        delay = self.sink.backoff_initial
        while not self.should_stop:
            try:
                store = await asyncio.to_thread(self._store_factory, self.settings.clickhouse_url)
                await asyncio.to_thread(store.apply_schema)
            except (StoreError, OSError) as exc:
                log.warning("ClickHouse not ready, retrying in %.1fs: %s", delay, first_line(exc))
                await self.sleep(delay)
                delay = min(delay * 2, self.sink.backoff_max)
                continue
            self.store = store
            return

    def _consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self._group_id,
            client_id=f"{settings.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout / 3) * 1000),
            max_poll_interval_ms=600_000,  # a long ClickHouse outage must not look like a hang
            **settings.consumer_kwargs(),
        )
        consumer.subscribe([self.sink.updates_topic, self.sink.changelog_topic], listener=self)
        return consumer

    async def _consume(self) -> None:
        assert self.consumer is not None
        poll_ms = int(min(self.sink.flush_seconds, 0.5) * 1000)
        while not self.should_stop:
            records = await self.consumer.getmany(
                timeout_ms=poll_ms, max_records=self.sink.batch_rows
            )
            for tp, messages in records.items():
                for message in messages:
                    self.sink.add(
                        tp.topic,
                        tp.partition,
                        message.offset,
                        message.key,
                        message.value,
                        message.timestamp,
                    )
                if messages:
                    self._read_next[tp] = messages[-1].offset + 1
            if self.sink.due():
                await self._flush_and_commit()
            self._update_lag()
        # Stopping: one last write of what was read, so a clean stop leaves nothing to resend.
        if self.sink.batch:
            await self._flush_and_commit()

    async def _flush_and_commit(self) -> None:
        assert self.consumer is not None
        async with self._lock:
            if not self.sink.batch:
                return
            offsets = await self.sink.flush()
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The rows are in ClickHouse; whoever reads these partitions next writes them
                # again, which changes nothing in FINAL.
                log.warning("sink commit failed (rows are written, will be resent): %s", exc)
                return
            metrics.sink_batches.inc()
            self.progressed()

    def _update_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            # Confirmed up to the batch's first offset, or up to everything read when the batch
            # holds nothing of this partition.
            confirmed = self.sink.batch.first.get(tp, self._read_next.get(tp))
            if end is None or confirmed is None:
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - confirmed)
        for topic in (self.sink.updates_topic, self.sink.changelog_topic):
            metrics.sink_lag_records.labels(topic).set(lag.get(topic, 0))
        oldest = self.sink.batch.oldest_timestamp_ms
        metrics.sink_lag_seconds.set(0 if oldest is None else max(0.0, time.time() - oldest / 1000))

    async def _close_consumer(self) -> None:
        self.ready.clear()
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception:  # the broker may be gone; nothing is left to save
                log.debug("error stopping the sink consumer", exc_info=True)

    # --- rebalances ----------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Waits for a flush in progress (its commit is still valid now), then drops what was read
        # but not written from the lost partitions: the next owner reads it again.
        async with self._lock:
            self.sink.discard(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("sink assigned %d partitions", len(assigned))
        await self._rebuild_what_the_store_lacks(assigned)

    async def _rebuild_what_the_store_lacks(self, assigned: set[TopicPartition]) -> None:
        """Re-read partitions whose committed offset is past what the store holds.

        Committed offsets say what was written once; the store may have lost it since (its
        ``metadata/`` deleted, a restore from an older backup). Consuming on from the committed
        offsets would never bring it back, so those partitions are read again from what the
        store holds (the beginning, if it holds nothing): the tables absorb the rows they still
        have (see the module docstring).
        """
        consumer, store = self.consumer, self.store
        if consumer is None or store is None or not assigned:
            return
        held = await asyncio.to_thread(self._held_offsets, store)
        ends = await consumer.end_offsets(sorted(assigned))
        behind = [
            f"{tp.topic}[{tp.partition}] ends at {ends[tp]}, the store holds it up to {held[tp]}"
            for tp in sorted(assigned)
            if held.get(tp, 0) > ends.get(tp, 0)
        ]
        if behind:
            # The topic went backwards: an emptied or different broker, or a store of another
            # cluster. Re-reading would mix two histories in one store.
            self.on_lost_data(
                f"the broker lost data: {'; '.join(behind[:5])} (an empty or different broker "
                f"at {self.settings.kafka_bootstrap}, or the store of another cluster?). "
                "Restore the broker's data, or start over against this broker: see "
                "'The broker lost data' in docs/operations.md"
            )
            return
        for tp in sorted(assigned):
            committed = await consumer.committed(tp)
            have = held.get(tp, 0)
            if committed is None or committed <= have:
                continue
            metrics.sink_store_rebuilds.labels(tp.topic).inc()
            log.error(
                "the store %s holds %s[%d] up to offset %d, but the sink's group %s committed %d: "
                "its tables lost rows; rebuilding it from the topic (re-reading from offset %d)",
                redact_url(self.settings.clickhouse_url),
                tp.topic,
                tp.partition,
                have,
                self._group_id,
                committed,
                have,
            )
            if have:
                consumer.seek(tp, have)
            else:
                await consumer.seek_to_beginning(tp)

    def _held_offsets(self, store: Store) -> dict[TopicPartition, int]:
        result = store.query(
            f"SELECT topic, partition, max(next_offset) FROM {OFFSETS_TABLE} "
            "WHERE group_id = {group:String} GROUP BY topic, partition",
            {"group": self._group_id},
            budget="sink",
        )
        return {TopicPartition(str(t), int(p)): int(n) for t, p, n in result.rows}
