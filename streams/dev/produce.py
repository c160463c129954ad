"""Produce JSON lines (or in-memory records) to a topic for `cci produce` and the tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from streams.kafka.embedded import ONE_RECORD_BATCH_BYTES

Record = tuple[bytes | None, bytes]

# Sends in flight before we wait for their acknowledgements; bounds memory for large files.
MAX_PENDING_SENDS = 10_000
NORMAL_LINGER_MS = 20
# A whole batch per produce request: well under Kafka's default 1 MB message.max.bytes.
BULK_BATCH_BYTES = 512 * 1024
# Bulk batches sent and not yet acknowledged, at most: bounds the memory of a large load.
MAX_BULK_BATCHES_IN_FLIGHT = 32
MAX_BULK_BYTES_BUILDING = 32 * 1024 * 1024  # and the batches still being filled
MAX_REQUEST_BYTES = 1024 * 1024  # aiokafka's default max_request_size: a record over it fails
RECORD_OVERHEAD_BYTES = 512  # see record_size


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
    acknowledged = 0
    try:
        await producer.start()  # inside: a producer that failed to start is closed too
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
    Few batches matter there too: each fetch of a partition lists every batch it holds, so a
    topic loaded one record per batch costs the broker on every fetch for as long as anyone
    follows it. Streams: at most MAX_BULK_BATCHES_IN_FLIGHT batches are held unacknowledged.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=BULK_BATCH_BYTES,
        **dict(client_kwargs or {}),
    )
    try:
        await producer.start()  # inside: a producer that failed to start is closed too
        partitions = sorted(await producer.partitions_for(topic))
        partition_of = DefaultPartitioner()
        in_flight: list[tuple[asyncio.Future[Any], int]] = []
        acknowledged = 0

        async def settle() -> int:
            settled = sum(count for _, count in in_flight)
            await asyncio.gather(*(future for future, _ in in_flight))
            in_flight.clear()
            return settled

        async def send(partition: int, batch: Any) -> int:
            future = await producer.send_batch(batch, topic, partition=partition)
            # Each one's failure is seen, even those left in flight when another raised first
            # (else asyncio logs "Future exception was never retrieved" for every one).
            future.add_done_callback(_seen)
            in_flight.append((future, batch.record_count()))
            return await settle() if len(in_flight) >= MAX_BULK_BATCHES_IN_FLIGHT else 0

        building: dict[int, Any] = {}  # partition → the batch being filled
        building_bytes = 0
        held: dict[int, Record] = {}  # partition → its newest record: sent last, alone
        for record in records:
            partition = partition_of(record[0], partitions, partitions)
            previous = held.get(partition)
            held[partition] = record
            if previous is None:
                continue
            building_bytes += len(previous[0] or b"") + len(previous[1] or b"")
            if building_bytes > MAX_BULK_BYTES_BUILDING:
                # Many partitions, each batch still filling: send them as they are.
                for waiting, batch in building.items():
                    acknowledged += await send(waiting, batch)
                building.clear()
                building_bytes = 0
            batch = building.get(partition)
            if batch is None or not _append(batch, previous):
                if batch is not None:
                    acknowledged += await send(partition, batch)
                batch = producer.create_batch()
                _append(batch, previous)  # an empty batch takes any record
            building[partition] = batch
        for partition, batch in building.items():
            acknowledged += await send(partition, batch)
        acknowledged += await settle()
        for partition, record in held.items():
            batch = producer.create_batch()
            _append(batch, record)
            acknowledged += await send(partition, batch)
        acknowledged += await settle()
    finally:
        await producer.stop()
    return acknowledged


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def record_size(key: bytes | None, value: bytes | None) -> int:
    """Bytes a record takes in a produce request, with room for the batch's headers (aiokafka
    counts 88 for a key-less record): what ``MAX_REQUEST_BYTES`` bounds, on either path."""
    return len(key or b"") + len(value or b"") + RECORD_OVERHEAD_BYTES


def _append(batch: Any, record: Record) -> bool:
    key, value = record
    if (size := record_size(key, value)) > MAX_REQUEST_BYTES:
        # What the producer's send says of such a record (the embedded broker would take it).
        raise MessageSizeTooLargeError(
            f"a record of {size:,} bytes is over the {MAX_REQUEST_BYTES:,}-byte request limit"
        )
    return batch.append(key=key, value=value, timestamp=None) is not None


async def load_records(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    embedded_broker: bool,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """How the tools load a topic (`cci produce`, `cci generate --to-topics`): on the embedded
    broker in bulk (`produce_in_bulk`: few batches, the reported ends true), on Kafka through the
    producer's own batching (its batches fit any broker's message.max.bytes)."""
    if embedded_broker:
        return await produce_in_bulk(bootstrap, topic, records, client_kwargs=client_kwargs)
    return await produce_records(
        bootstrap, topic, records, one_record_batches=False, client_kwargs=client_kwargs
    )


async def produce_jsonl(
    bootstrap: str,
    topic: str,
    path_or_lines: str | os.PathLike[str] | Iterable[str | bytes],
    *,
    key_field: str = "user_id",
    embedded_broker: bool,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Produce each non-blank line of a JSON-lines file (or of an iterable of lines) as one record
    (`load_records`).

    The value is the line's bytes without its line ending; the key is the UTF-8 text of the
    record's `key_field`. A line that is not a JSON object with that field is produced with no
    key rather than dropped: the pipeline's dead-letter handling has to see bad input.
    """
    records = (_keyed(line, key_field) for line in _lines(path_or_lines))
    return await load_records(
        bootstrap, topic, records, embedded_broker=embedded_broker, client_kwargs=client_kwargs
    )


def oversized_lines(
    path: str | os.PathLike[str], key_field: str = "user_id"
) -> list[tuple[int, int]]:
    """(line number, record bytes) of each line of a JSON-lines file too large to be a record,
    its key included: checked before a load, so that a file with one is refused whole rather
    than half loaded."""
    with Path(path).open("rb") as lines:
        return [
            (number, size)
            for number, line in enumerate(lines, 1)
            # A key is never longer than its line: most lines need no parse.
            if 2 * len(value := line.rstrip(b"\r\n")) + RECORD_OVERHEAD_BYTES > MAX_REQUEST_BYTES
            and (size := record_size(key_of(value, key_field), value)) > MAX_REQUEST_BYTES
        ]


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
