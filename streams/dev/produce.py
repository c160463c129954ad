"""Produce JSON lines (or in-memory records) to a topic for `cci produce` and the tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streams.kafka.embedded import ONE_RECORD_BATCH_BYTES

Record = tuple[bytes | None, bytes]

# Sends in flight before we wait for their acknowledgements; bounds memory for large files.
MAX_PENDING_SENDS = 10_000
NORMAL_LINGER_MS = 20
# A whole batch per produce request: well under Kafka's default 1 MB message.max.bytes.
BULK_BATCH_BYTES = 512 * 1024


async def produce_records(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    one_record_batches: bool,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Send every (key, value) to `topic` with acks=all; return how many the broker acknowledged.

    `one_record_batches` is for the embedded broker (see ONE_RECORD_BATCH_BYTES); against a real
    Kafka leave it off. `client_kwargs` go to AIOKafkaProducer unchanged (TLS and SASL options).
    """
    batching: dict[str, Any] = (
        {"max_batch_size": ONE_RECORD_BATCH_BYTES, "linger_ms": 0}
        if one_record_batches
        else {"linger_ms": NORMAL_LINGER_MS}
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", **batching, **dict(client_kwargs or {})
    )
    await producer.start()
    acknowledged = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value in records:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= MAX_PENDING_SENDS:
                acknowledged += len(await asyncio.gather(*pending))
                pending.clear()
        acknowledged += len(await asyncio.gather(*pending))
    finally:
        await producer.stop()
    return acknowledged


async def produce_in_bulk(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Send every (key, value) to `topic` in batches of up to BULK_BATCH_BYTES built here, each
    partition's in order and the partitions side by side; return how many were acknowledged.

    Keys go to the partition Kafka's default partitioner picks, as with `produce_records`. Each
    partition's last record is sent alone, after the rest is acknowledged: the embedded broker
    reports a partition's end as its last batch's base offset + 1 (docs/embedded-broker.md), so a
    one-record last batch makes that the true end for readers that stop there (the profile table).
    For loading large inputs quickly (`cci bench --recovery`): the per-record `send` of
    `produce_records` moves ~25,000 records/s, and one-record batches ~3,000.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=BULK_BATCH_BYTES,
        **dict(client_kwargs or {}),
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[Record]] = {p: [] for p in partitions}
        partition_of = DefaultPartitioner()
        for key, value in records:
            by_partition[partition_of(key, partitions, partitions)].append((key, value))
        sent = await asyncio.gather(
            *(
                _send_partition(producer, topic, partition, rows)
                for partition, rows in by_partition.items()
                if rows
            )
        )
    finally:
        await producer.stop()
    return sum(sent)


async def _send_partition(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[Record]
) -> int:
    async def send(rows: list[Record]) -> list[asyncio.Future[Any]]:
        futures = []
        batch = producer.create_batch()
        for key, value in rows:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value):,} bytes is over one batch")
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    acknowledged = 0
    for rows in (records[:-1], records[-1:]):
        if rows:
            await asyncio.gather(*await send(rows))
            acknowledged += len(rows)
    return acknowledged


async def produce_jsonl(
    bootstrap: str,
    topic: str,
    path_or_lines: str | os.PathLike[str] | Iterable[str | bytes],
    *,
    key_field: str = "user_id",
    one_record_batches: bool,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Produce each non-blank line of a JSON-lines file (or of an iterable of lines) as one record.

    The value is the line's bytes without its line ending; the key is the UTF-8 text of the
    record's `key_field`. A line that is not a JSON object with that field is produced with no
    key rather than dropped: the pipeline's dead-letter handling has to see bad input.
    """
    records = (_keyed(line, key_field) for line in _lines(path_or_lines))
    return await produce_records(
        bootstrap,
        topic,
        records,
        one_record_batches=one_record_batches,
        client_kwargs=client_kwargs,
    )


def _lines(path_or_lines: str | os.PathLike[str] | Iterable[str | bytes]) -> Iterator[bytes]:
    if isinstance(path_or_lines, str | os.PathLike):
        with Path(path_or_lines).open("rb") as lines:
            yield from _non_blank(lines)
    else:
        yield from _non_blank(
            line.encode() if isinstance(line, str) else line for line in path_or_lines
        )


def _non_blank(lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield value


def _keyed(value: bytes, key_field: str) -> Record:
    return (key_of(value, key_field), value)


def key_of(value: bytes, key_field: str = "user_id") -> bytes | None:
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    key = document.get(key_field)
    if key is None:
        return None
    # A string key is used as is; any other JSON value (say a numeric id) as its JSON text.
    return key.encode() if isinstance(key, str) else orjson.dumps(key)
