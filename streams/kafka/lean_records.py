"""Consumed records as named tuples, not aiokafka's ``ConsumerRecord``, for the ingest process.

aiokafka turns every record of a fetch into a ``ConsumerRecord`` dataclass (eleven fields, two of
them sizes computed per record) in a Python generator: 18 % of the ingest process's CPU in
``cci bench``'s backlog, where the ingest process is the pipeline's slowest stage. ``install``
makes every consumer of the process yield ``LeanRecord`` named tuples, which carry the fields the
ingest stage and the topic followers read, for about 70 % of the cost
(docs/performance.md).

It replaces ``aiokafka.consumer.fetcher.PartitionRecords``, which aiokafka's fetcher builds per
partition of a fetch response: an aiokafka internal, so ``pyproject.toml`` pins aiokafka's minor
version and ``tests/integration/test_lean_records.py`` reads a real broker both ways. Consumers
with deserializers or ``read_committed`` get aiokafka's own records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException

_STOCK = fetcher.PartitionRecords


class LeanRecord(NamedTuple):
    """The fields of ``aiokafka.structs.ConsumerRecord`` a pipeline consumer reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None


_new = tuple.__new__  # a named tuple's own __new__ is a Python function: twice the cost


class LeanPartitionRecords(_STOCK):  # type: ignore[misc,valid-type]
    """aiokafka's ``PartitionRecords``, yielding ``LeanRecord`` when it can."""

    def _unpack_records(self) -> Iterator[Any]:
        if (
            self._key_deserializer is not None
            or self._value_deserializer is not None
            or self._isolation_level != fetcher.READ_UNCOMMITTED
        ):
            yield from super()._unpack_records()
            return
        # aiokafka's loop without what only read_committed needs; control batches skipped.
        tp = self._tp
        topic, partition = tp.topic, tp.partition
        records = self._records
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {tp}")
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                continue
            for record in batch:
                offset = record.offset
                if offset < self.next_fetch_offset:
                    continue  # before the fetch offset: a batch fetched whole
                self.next_fetch_offset = offset + 1
                yield _new(
                    LeanRecord,
                    (
                        topic,
                        partition,
                        offset,
                        record.timestamp,
                        record.timestamp_type,
                        record.key,
                        record.value,
                    ),
                )
            # The batch's last offset, even if compaction removed its last record.
            self.next_fetch_offset = batch.next_offset


def install() -> None:
    """Every aiokafka consumer of this process yields ``LeanRecord`` from now on."""
    fetcher.PartitionRecords = LeanPartitionRecords
