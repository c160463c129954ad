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

Rows per record:

* a ``cci-updates`` value → one ``cci_segment_monthly`` row (version = the record's version);
* a dedup changelog chunk (key ``YYYY-MM@offset``, value ``{"seq", "a": [[user_id, ts, attrs]],
  "t": [[ticket_id, ts, attrs + [channel], user_id]]}``) → ``cci_monthly_active_users`` and
  ``cci_tickets`` rows. A chunk holds the winners at the time it was written; a later chunk for
  the same user-month or ticket always has an earlier (or equal) time, so the version
  ``2^63 - ts`` makes FINAL keep the stream's winner in whatever order chunks are written.
  Tombstones (expired months) are skipped: ClickHouse keeps history.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streams import domain, metrics
from streams.kafka.broker_watch import stop_for_lost_data
from streams.redaction import redact_url
from streams.settings import TOPIC_UPDATES, Settings
from streams.store.clickhouse import Store, StoreError, embedded_path, open_store
from streams.topics import changelog_topic

log = logging.getLogger("streams.sink.runner")

SEGMENT_TABLE = "cci_segment_monthly"
ACTIVE_TABLE = "cci_monthly_active_users"
TICKET_TABLE = "cci_tickets"
OFFSETS_TABLE = "cci_sink_offsets"  # per group and partition: what the store holds
OFFSETS_COLUMNS = ("group_id", "topic", "partition", "next_offset")
SEGMENT_COLUMNS = (
    "month",
    "dimension",
    "segment",
    "tickets",
    "active_users",
    "cci",
    "contact_rate_pct",
    "version",
    "updated_at",
    "band",
)
SEGMENT_COLUMN_NAMES = ("plan", "product", "region", "tenure")
ACTIVE_COLUMNS = ("month", "user_id", "active_at", *SEGMENT_COLUMN_NAMES, "extra", "version")
TICKET_COLUMNS = (
    "ticket_id",
    "user_id",
    "month",
    "created_at",
    "channel",
    *SEGMENT_COLUMN_NAMES,
    "extra",
    "version",
)
COLUMNS = {
    SEGMENT_TABLE: SEGMENT_COLUMNS,
    ACTIVE_TABLE: ACTIVE_COLUMNS,
    TICKET_TABLE: TICKET_COLUMNS,
    OFFSETS_TABLE: OFFSETS_COLUMNS,
}
# Versions of facts count time backwards from here, so the earliest event has the highest one.
VERSION_BASE = 1 << 63


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


# --- records → rows (pure) -----------------------------------------------------------------------


def segment_row(value: bytes) -> list[Any]:
    """The ``cci_segment_monthly`` row of one ``cci-updates`` value."""
    record = orjson.loads(value)
    return [
        domain.month_start(domain.month_from_label(record["month"])),
        record["dimension"],
        record["segment"],
        record["tickets"],
        record["active_users"],
        record["cci"],
        record["contact_rate_pct"],
        record["version"],
        datetime.fromisoformat(record["emitted_at"]),
        record.get("band"),  # records written before the band was added have none: NULL
    ]


NO_EXTRAS: dict[str, str] = {}  # never mutated: shared by every row without extra dimensions


class FactRows:
    """Rows of dedup changelog chunks, for the worker's dimensions (attribute order:
    ``domain.user_dimensions``: plan, product, region, extras…, tenure; tickets add the channel)."""

    def __init__(self, dimensions: Sequence[str]) -> None:
        self.dimensions = tuple(dimensions)
        self._named = operator.itemgetter(
            *[self.dimensions.index(name) for name in SEGMENT_COLUMN_NAMES]
        )
        self._extras = [
            (i, name) for i, name in enumerate(self.dimensions) if name not in SEGMENT_COLUMN_NAMES
        ]

    def _segments(self, attributes: Sequence[str], width: int) -> list[Any]:
        if len(attributes) != width:
            raise ValueError(
                f"{len(attributes)} attributes where {width} were expected: was the changelog "
                f"written with other CCI_EXTRA_DIMENSIONS than {self.dimensions}?"
            )
        # Runs once per row: the common case without extra dimensions shares one empty map.
        extras = {name: attributes[i] for i, name in self._extras} if self._extras else NO_EXTRAS
        return [*self._named(attributes), extras]

    def chunk_rows(self, key: bytes, value: bytes) -> tuple[list[list[Any]], list[list[Any]]]:
        """(active-user rows, ticket rows) of one chunk."""
        label, _, _ = key.decode("utf-8").partition("@")
        month = domain.month_start(domain.month_from_label(label))
        chunk = orjson.loads(value)
        width = len(self.dimensions)
        users = [
            [month, user_id, ts, *self._segments(attributes, width), VERSION_BASE - ts]
            for user_id, ts, attributes in chunk["a"]
        ]
        tickets = [
            [
                ticket_id,
                user[0] if user else "",
                month,
                ts,
                attributes[-1],
                *self._segments(attributes[:-1], width),
                VERSION_BASE - ts,
            ]
            for ticket_id, ts, attributes, *user in chunk["t"]
        ]
        return users, tickets


# --- the sink: add() / flush() -------------------------------------------------------------------


@dataclass
class Batch:
    """Rows not yet confirmed by ClickHouse, and the offsets to commit once they are."""

    rows: dict[str, list[list[Any]]] = field(default_factory=dict)
    # Per partition: the first offset in the batch (what a restart would re-read from) and the
    # offset to commit once the batch is written (last + 1).
    first: dict[TopicPartition, int] = field(default_factory=dict)
    commit: dict[TopicPartition, int] = field(default_factory=dict)
    by_partition: dict[TopicPartition, dict[str, list[list[Any]]]] = field(default_factory=dict)
    started: float | None = None  # monotonic time of the first record
    oldest_timestamp_ms: int | None = None

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def __bool__(self) -> bool:
        return bool(self.commit)


class ClickHouseSink:
    """Collects rows of the sink's topics; ``flush()`` writes them, retrying until it succeeds.

    ``store_of`` gives the Store to write to (injected so tests can wrap it in a failing one).
    """

    def __init__(
        self,
        store_of: Callable[[], Store],
        dimensions: Sequence[str],
        *,
        updates_topic: str,
        changelog_topic: str,
        batch_rows: int,
        flush_seconds: float,
        backoff_initial: float = 0.2,
        backoff_max: float = 15.0,
        offsets_group: str | None = None,
    ) -> None:
        self._store_of = store_of
        # When set, every flush also records in OFFSETS_TABLE what the store now holds.
        self.offsets_group = offsets_group
        self.facts = FactRows(dimensions)
        self.updates_topic = updates_topic
        self.changelog_topic = changelog_topic
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.batch = Batch()
        self.stopping = False  # set when shutting down: stop retrying, leave rows unconfirmed

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Buffer the rows of one record (a tombstone adds none, but its offset is committed)."""
        tp = TopicPartition(topic, partition)
        batch = self.batch
        if batch.started is None:
            batch.started = time.monotonic()
        if timestamp_ms is not None and (
            batch.oldest_timestamp_ms is None or timestamp_ms < batch.oldest_timestamp_ms
        ):
            batch.oldest_timestamp_ms = timestamp_ms
        batch.first.setdefault(tp, offset)
        batch.commit[tp] = offset + 1
        if value is None:
            return
        try:
            if topic == self.updates_topic:
                rows = {SEGMENT_TABLE: [segment_row(value)]}
            elif topic == self.changelog_topic and key is not None:
                users, tickets = self.facts.chunk_rows(key, value)
                rows = {ACTIVE_TABLE: users, TICKET_TABLE: tickets}
            else:
                return
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Only the worker writes these topics, so this is a bug or a foreign producer: keep
            # going (a record that cannot be read would stop the sink for good) but say so.
            metrics.sink_skipped_records.labels(topic).inc()
            log.error("sink skips %s[%d]@%d: %s", topic, partition, offset, exc)
            return
        for table, table_rows in rows.items():
            self._append(tp, table, table_rows)

    def _append(self, tp: TopicPartition, table: str, rows: list[list[Any]]) -> None:
        if rows:
            self.batch.rows.setdefault(table, []).extend(rows)
            self.batch.by_partition.setdefault(tp, {}).setdefault(table, []).extend(rows)

    def due(self) -> bool:
        batch = self.batch
        if not batch:
            return False
        if batch.row_count >= self.batch_rows:
            return True
        return batch.started is not None and time.monotonic() - batch.started >= self.flush_seconds

    def discard(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget the rows of partitions this consumer lost: their next owner re-reads them."""
        gone = set(partitions) & set(self.batch.commit)
        if not gone:
            return
        kept = Batch(started=self.batch.started, oldest_timestamp_ms=self.batch.oldest_timestamp_ms)
        for tp, offset in self.batch.commit.items():
            if tp in gone:
                continue
            kept.first[tp] = self.batch.first[tp]
            kept.commit[tp] = offset
            for table, rows in self.batch.by_partition.get(tp, {}).items():
                kept.rows.setdefault(table, []).extend(rows)
                kept.by_partition.setdefault(tp, {})[table] = rows
        self.batch = kept

    async def flush(self) -> dict[TopicPartition, int]:
        """Write the batch; return the offsets to commit. Retries with back-off until ClickHouse
        has every row; raises ``SinkStopped`` if the sink is stopped first."""
        batch = self.batch
        for table in (SEGMENT_TABLE, ACTIVE_TABLE, TICKET_TABLE):
            rows = batch.rows.get(table)
            if rows:
                await self._insert_until_written(table, rows)
                metrics.sink_rows_written.labels(table).inc(len(rows))
        offsets = dict(batch.commit)
        if self.offsets_group is not None:
            # After the rows: the record never claims rows the store does not have.
            held = [[self.offsets_group, tp.topic, tp.partition, n] for tp, n in offsets.items()]
            await self._insert_until_written(OFFSETS_TABLE, held)
        self.batch = Batch()
        return offsets

    async def _insert_until_written(self, table: str, rows: list[list[Any]]) -> None:
        delay = self.backoff_initial
        while True:
            try:
                store = self._store_of()
                await asyncio.to_thread(store.insert, table, rows, COLUMNS[table])
                return
            except Exception as exc:
                # Unreachable, refused, timed out or an error inside ClickHouse: all the same
                # here. Giving up would lose the rows (their offsets would be committed next).
                failure = exc
            if self.stopping:
                raise SinkStopped(f"stopped while writing {len(rows)} rows to {table}")
            metrics.sink_retries.labels(table).inc()
            log.warning(
                "writing %d rows to %s failed, retrying in %.1fs: %s",
                len(rows),
                table,
                delay,
                _first_line(failure),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)


class SinkStopped(Exception):
    """The sink stopped before ClickHouse confirmed a batch (its offsets stay uncommitted)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


# --- the consumer loop ---------------------------------------------------------------------------


class SinkRunner(ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumes the sink's topics into a ``ClickHouseSink``, committing after each flush."""

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
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # a flush+commit and a rebalance never interleave
        self._task: asyncio.Task[None] | None = None
        self._read_next: dict[TopicPartition, int] = {}  # per partition: last offset read + 1

    def _current_store(self) -> Store:
        if self.store is None:
            raise StoreError("the store is not open")
        return self.store

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self, timeout: float = 15.0) -> None:
        """Write what was read (one attempt: unconfirmed rows are resent after a restart),
        commit it, and close the consumer and the store."""
        self._stop.set()
        self.sink.stopping = True
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning("sink did not stop within %.0fs; cancelling it", timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        """Open the store, then consume until stopped; a failure restarts the consumer from the
        committed offsets after a back-off, so the sink never dies quietly."""
        delay = self.sink.backoff_initial
        try:
            await self._open_store()
            while not self._stop.is_set():
                try:
                    await self._run_consumer()
                except SinkStopped as exc:
                    log.warning("sink stopped before ClickHouse confirmed a batch: %s", exc)
                    return
                except Exception:
                    log.exception("sink failed; restarting its consumer in %.1fs", delay)
                    self.sink.batch = Batch()  # uncommitted: read again after the restart
                    await self._close_consumer()
                    await self._sleep_unless_stopped(delay)
                    delay = min(delay * 2, self.sink.backoff_max)
        finally:
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

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    @property
    def _group_id(self) -> str:
        return sink_group(self.settings)

    async def _open_store(self) -> None:
        delay = self.sink.backoff_initial
        while not self._stop.is_set():
            try:
                store = await asyncio.to_thread(self._store_factory, self.settings.clickhouse_url)
                await asyncio.to_thread(store.apply_schema)
            except (StoreError, OSError) as exc:
                log.warning("ClickHouse not ready, retrying in %.1fs: %s", delay, _first_line(exc))
                await self._sleep_unless_stopped(delay)
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
        while not self._stop.is_set():
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
        )
        return {TopicPartition(str(t), int(p)): int(n) for t, p, n in result.rows}
