"""Reading an output topic of ``cci bench`` (the pipeline's ``cci-updates`` or a peer's) until
its figures equal the recount, and when they first did."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.bench.measure import EMPTY, Figure, FigureHistory, FigureKey, describe_difference
from streams.bench.phase import STALL_TIMEOUT_S, Figures

READ_TIMEOUT_MS = 500


class OutputRecord(Protocol):
    """What the tail reads of a consumed record (aiokafka's ConsumerRecord has it)."""

    key: bytes | None
    value: bytes | None
    timestamp: int  # ms


Decoder = Callable[[bytes | None, bytes | None], list[tuple[FigureKey, Figure]]]


def decode_update(key: bytes | None, value: bytes | None) -> list[tuple[FigureKey, Figure]]:
    """A ``cci-updates`` record."""
    if value is None:
        return []
    u = orjson.loads(value)
    return [((u["month"], u["dimension"], u["segment"]), (u["tickets"], u["active_users"]))]


class PeerDecoder:
    """Decodes a peer's output records: ``{"month", "figures": [[dimension, segment, tickets,
    users], …]}``, the figures a step changed.

    Two optional fields serve a peer whose output is a table's change stream (Pathway):
    ``"complete": true`` says the record lists every figure of its month, so a figure it no longer
    lists is back to zero; ``"diff": -1`` marks the retraction of a month's previous record, which
    the insertion replacing it (``"diff": 1``, the same engine time) supersedes, so it is skipped.
    """

    def __init__(self) -> None:
        self.listed: dict[str, set[tuple[str, str]]] = {}  # per month, of complete records

    def __call__(self, key: bytes | None, value: bytes | None) -> list[tuple[FigureKey, Figure]]:
        if value is None:
            return []
        document = orjson.loads(value)
        if document.get("diff", 1) < 0:
            return []
        month = document["month"]
        figures = [((month, d, s), (t, u)) for d, s, t, u in document["figures"]]
        if document.get("complete"):
            listed = {(d, s) for d, s, _, _ in document["figures"]}
            gone = self.listed.get(month, set()) - listed
            self.listed[month] = listed
            figures += [((month, d, s), EMPTY) for d, s in sorted(gone)]
        return figures


class OutputTail:
    """Follows an output topic from its beginning (no group), folding it into a FigureHistory;
    the publications of ``watch``ed keys are also kept in order, with their timestamps."""

    def __init__(self, bootstrap: str, topic: str, decode: Decoder) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.decode = decode
        self.history = FigureHistory()
        self.watched: dict[FigureKey, list[tuple[int, Figure]]] = {}
        self.first_record_ms: int | None = None  # the earliest timestamp of a record with figures
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    def watch(self, key: FigureKey) -> None:
        self.watched[key] = []

    async def read(self) -> int:
        """Fold what arrived (waiting up to READ_TIMEOUT_MS); the number of records read."""
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=READ_TIMEOUT_MS, max_records=50_000)
        for records in batches.values():
            self.fold(records)
        return sum(len(records) for records in batches.values())

    def fold(self, records: Iterable[OutputRecord]) -> None:
        """Fold the records of one partition, in their order."""
        for record in records:
            figures = self.decode(record.key, record.value)
            # The earliest over every partition: they are read one after the other, and a later
            # fetch may bring another partition's earlier records.
            first = self.first_record_ms
            if figures and (first is None or record.timestamp < first):
                self.first_record_ms = record.timestamp
            for key, figure in figures:
                self.history.apply(key, figure, record.timestamp)
                if key in self.watched:
                    self.watched[key].append((record.timestamp, figure))


@dataclass
class Settled:
    exact: bool
    at_ms: int | None  # when the output first held the expected figures
    difference: list[str]


async def wait_settled(
    tail: OutputTail, expected: Figures, problem: Callable[[], str | None]
) -> Settled:
    """Read until the output's figures equal ``expected``; give up when the producing process
    has a ``problem`` or the output stops changing for STALL_TIMEOUT_S."""
    last_change = time.monotonic()
    while True:
        if await tail.read():
            last_change = time.monotonic()
        figures = tail.history.figures()
        if figures == expected:
            return Settled(True, tail.history.settled_at(), [])
        trouble = problem()
        if trouble is None and time.monotonic() - last_change > STALL_TIMEOUT_S:
            trouble = f"its output stopped changing for {STALL_TIMEOUT_S:.0f} s"
        if trouble is not None:
            return Settled(False, None, [trouble, *describe_difference(expected, figures)])
