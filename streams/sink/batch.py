"""The sink's buffer: ``add()`` turns records into rows, ``flush()`` writes them to ClickHouse
(retrying until it has every one) and returns the offsets that may then be committed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from streams import metrics
from streams.sink.rows import (
    ACTIVE_TABLE,
    CHUNKS_TABLE,
    COLUMNS,
    OFFSETS_TABLE,
    SEGMENT_TABLE,
    TICKET_TABLE,
    FactRows,
    segment_row,
)
from streams.store.clickhouse import Store

log = logging.getLogger(__name__)


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
        """Rows of the tables: a chunk's row in ``CHUNKS_TABLE`` counts as the rows it holds."""
        return sum(map(_rows_held, self.rows.get(CHUNKS_TABLE, ()))) + sum(
            len(rows) for table, rows in self.rows.items() if table != CHUNKS_TABLE
        )

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
                chunk = self.facts.chunk_row(key, value)
                if chunk is not None:
                    rows = {CHUNKS_TABLE: [chunk]}
                else:
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
        for table in (SEGMENT_TABLE, CHUNKS_TABLE, ACTIVE_TABLE, TICKET_TABLE):
            rows = batch.rows.get(table)
            if not rows:
                continue
            await self._insert_until_written(table, rows)
            if table == CHUNKS_TABLE:  # counted as the rows its views wrote
                metrics.sink_rows_written.labels(ACTIVE_TABLE).inc(sum(row[2] for row in rows))
                metrics.sink_rows_written.labels(TICKET_TABLE).inc(sum(row[3] for row in rows))
            else:
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
                first_line(failure),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)


def _rows_held(chunk: list[Any]) -> int:
    """The active-user and ticket rows of a ``CHUNKS_TABLE`` row (``rows.CHUNKS_COLUMNS``)."""
    return int(chunk[2] + chunk[3])


class SinkStopped(Exception):
    """The sink stopped before ClickHouse confirmed a batch (its offsets stay uncommitted)."""


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
