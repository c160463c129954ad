"""Stages 1–2 on the wire: input records → validated, enriched facts on ``{app}-facts``.

Faust hands records to agents one event at a time (~5,000 records/s on this machine even for an
agent that does nothing), so the input topics are read here with aiokafka ``getmany`` in batches
instead; Faust keeps what it is good at: the stateful stages, their changelogs and recovery.

Delivery: the facts and dead letters of a batch are acknowledged by the broker (acks=all) before
the batch's input offsets are committed. While the broker acknowledges one batch, the next is read
and enriched: a batch is committed after the next one is sent. A crash in between re-reads the
batch and sends its facts again, which the deduplicate stage absorbs (its rule is idempotent):
at-least-once in, exact out. The metrics of a batch are counted, and handed to ``before_commit``,
before its offsets are committed too: a crash after the commit loses none of its counts
(at-least-once counts).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streams import metrics
from streams.clock import Clock
from streams.kafka.embedded import PRODUCER_BATCH_BYTES
from streams.loops import Loop
from streams.pipeline.enrich import ActiveFact, Enricher, TicketFact, encode_facts
from streams.pipeline.partitioning import partition_for
from streams.pipeline.records import (
    DEAD_LETTER_ERROR_CHARS,
    DEAD_LETTER_KEY_BYTES,
    DEAD_LETTER_RAW_BYTES,
    split_to_fit,
)
from streams.pipeline.validate import MAX_SEGMENT_CHARS, InvalidEvent, parse_activity, parse_ticket
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_DEAD_LETTERS,
    TOPIC_TICKETS,
    Settings,
)
from streams.topics import ingest_group

log = logging.getLogger(__name__)

INPUT_TOPICS = (TOPIC_ACTIVITY, TOPIC_TICKETS)
# Input records per batch: one facts record per facts partition per batch, so the stages after
# this one pay Faust's per-record cost once per ~BATCH/partitions facts, not once per event.
# 20,000 against 5,000: pipeline/ceiling 0.330-0.347 against 0.294-0.316 in `cci bench`'s backlog.
INGEST_BATCH = 20000
# A process's first batch: small, so that the first figures come soon under a backlog (a full
# batch took ~0.15 s to enrich before anything was sent on).
FIRST_BATCH = 2000
POLL_MS = 50  # how long an idle poll waits: bounds the latency a quiet stream adds
# In a steady stream a batch is taken at most this often (a full one at once): a record waits up
# to 50 ms more, and each batch carries more events. Unpaced, the loop took one every ~10 ms at
# a few hundred events/s; per batch it pays a fetch (the embedded broker lists every batch of the
# partition for it), a facts record per partition, the worker's handling of each, a commit.
# Measured in docs/performance.md: ~2.5 of 24 CPU seconds saved at 10,000 events/s.
MIN_BATCH_INTERVAL_S = 0.05
# The facts of one input batch leave in one request instead of one request per partition.
FACTS_LINGER_MS = 5


def facts_producer_batching() -> dict[str, int]:
    """How the ingest stage batches facts and dead letters, on any broker.

    On the embedded broker too: whatever reads a topic to its end asks ``true_end_offsets``, so its
    misreported end of a multi-record batch misleads none. With one record per batch a partition
    took one record per round trip while the worker long-polled it (docs/embedded-broker.md).
    """
    return {"max_batch_size": PRODUCER_BATCH_BYTES, "linger_ms": FACTS_LINGER_MS}


def dead_letter_value(
    topic: str, partition: int, offset: int, raw: bytes | None, error: InvalidEvent
) -> bytes:
    """The dead letter of a record; always fits a record (``records.MAX_RECORD_BYTES``): a raw
    value longer than ``DEAD_LETTER_RAW_BYTES`` is cut, and the letter says so."""
    raw = raw or b""
    letter: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": str(error)[:DEAD_LETTER_ERROR_CHARS],
        "reason": error.reason,
        "raw": base64.b64encode(raw[:DEAD_LETTER_RAW_BYTES]).decode("ascii"),
    }
    if len(raw) > DEAD_LETTER_RAW_BYTES:
        letter["raw_truncated"] = True
        letter["raw_bytes"] = len(raw)
    return orjson.dumps(letter)


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The original key, cut to ``DEAD_LETTER_KEY_BYTES`` (a key may be as large as a value)."""
    return None if key is None else key[:DEAD_LETTER_KEY_BYTES]


@dataclass
class IngestedBatch:
    """What one batch of input records became. Pure data: no Kafka here."""

    facts: dict[int, list[ActiveFact | TicketFact]] = field(
        default_factory=lambda: defaultdict(list)
    )
    dead_letters: list[tuple[bytes | None, bytes, str]] = field(default_factory=list)
    consumed: Counter[str] = field(default_factory=Counter)
    inactive: int = 0


@dataclass(frozen=True)
class SentBatch:
    """A batch handed to the producer: what to count and commit once its ``acks`` are done."""

    batch: IngestedBatch
    offsets: dict[TopicPartition, int]
    acks: list[Any]


class InputRecord:
    """The fields of a consumed record this stage reads (aiokafka's ConsumerRecord has them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def ingest_records(
    records: Sequence[InputRecord],
    enricher: Enricher,
    max_event_bytes: int,
    facts_partitions: int,
    now: datetime,
    max_segment_chars: int = MAX_SEGMENT_CHARS,
) -> IngestedBatch:
    """Validate and enrich a batch: facts grouped by facts partition, and dead letters."""
    batch = IngestedBatch()
    facts = batch.facts
    activities = 0
    active_fact, ticket_fact = enricher.active_fact, enricher.ticket_fact  # once, not per record
    for record in records:
        raw = record.value or b""
        try:
            if record.topic == TOPIC_ACTIVITY:
                activities += 1
                fact = active_fact(parse_activity(raw, max_event_bytes, max_segment_chars), now)
                if fact is None:
                    batch.inactive += 1
                    continue
            else:
                fact = ticket_fact(parse_ticket(raw, max_event_bytes, max_segment_chars), now)
        except InvalidEvent as error:
            value = dead_letter_value(record.topic, record.partition, record.offset, raw, error)
            batch.dead_letters.append((dead_letter_key(record.key), value, error.reason))
            continue
        facts[partition_for(fact[0], facts_partitions)].append(fact)
    # Counted once per batch, not per record (input records are of the two topics only).
    for topic, consumed in (
        (TOPIC_ACTIVITY, activities),
        (TOPIC_TICKETS, len(records) - activities),
    ):
        if consumed:
            batch.consumed[topic] = consumed
    return batch


class IngestRunner(Loop):
    """Consumes the input topics in its own consumer group and publishes facts batches; a failure
    restarts it from the committed offsets after a back-off (``streams/loops.py``)."""

    what = "ingest"
    stop_within = 15.0

    def __init__(
        self,
        settings: Settings,
        enricher: Enricher,
        facts_topic: str,
        wait_ready: Callable[[], Any],
        *,
        clock: Clock | None = None,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        backoff_initial: float | None = None,
        backoff_max: float | None = None,
    ) -> None:
        super().__init__(backoff_initial=backoff_initial, backoff_max=backoff_max)
        self.settings = settings
        self.enricher = enricher
        self.facts_topic = facts_topic
        self.wait_ready = wait_ready  # awaited before the first record: profiles fully loaded
        self.clock = clock or Clock()  # what "now" is: too-late and future events, months
        self.running = asyncio.Event()  # consumer and producer started
        # Awaited once per batch, counted and not yet committed: where the ingest process hands
        # its counts to the worker, since no one reads a committed batch again.
        self.before_commit = before_commit
        self.first_consumed = False  # set once per process: cci_first_event_consumed_timestamp
        # The batch sent and not yet committed, and the lock of whoever settles it: the loop, or
        # a rebalance, which must commit it first (else the batch is read and counted again).
        self._in_flight: SentBatch | None = None
        self._settling = asyncio.Lock()

    async def run(self) -> None:
        await self.wait_ready()
        consumer, producer = self._consumer(), self._producer()
        try:
            await producer.start()
            await consumer.start()
            self.running.set()
            await self._consume(consumer, producer)
        finally:
            self.running.clear()
            for client in (consumer, producer):
                try:
                    await client.stop()
                except Exception:  # the broker may be gone; nothing is left to save
                    log.debug("error stopping an ingest client", exc_info=True)

    async def on_failure(self, exc: Exception) -> None:
        metrics.ingest_restarts.inc()

    def _consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=ingest_group(settings.app_id),
            client_id=f"{settings.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout / 3) * 1000),
            **settings.consumer_kwargs(),
        )
        consumer.subscribe(list(INPUT_TOPICS), listener=_SettleBeforeRebalance(self, consumer))
        return consumer

    def _producer(self) -> AIOKafkaProducer:
        settings = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{settings.app_id}-ingest",
            acks="all",
            # Facts records are split to fit the default 1 MB request (streams/pipeline/records.py).
            **facts_producer_batching(),
            **settings.kafka_client_kwargs(),
        )

    async def _consume(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        next_take = 0.0  # loop time at which the next batch may be taken
        self._in_flight = None  # a restart reads from the committed offsets
        while not self.should_stop:
            if (rest := next_take - loop.time()) > 0:
                await asyncio.sleep(rest)
            most = INGEST_BATCH if self.first_consumed else FIRST_BATCH
            fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=most)
            taken_at = loop.time()
            records = [record for batch in fetched.values() for record in batch]
            if records and not self.first_consumed:
                # When the first records came in: the start of the bench's figures.
                self.first_consumed = True
                metrics.first_event_consumed.set_to_current_time()
            batch = None
            if records:
                batch = ingest_records(
                    records,
                    self.enricher,
                    settings.max_event_bytes,
                    settings.partitions,
                    self.clock.now(),
                    settings.max_segment_chars,
                )
            async with self._settling:
                # The batch before is settled after this one is sent: the broker acknowledges
                # it while this process reads and enriches.
                following = None
                if batch is not None:
                    offsets = {tp: part[-1].offset + 1 for tp, part in fetched.items() if part}
                    acks = await self._send(producer, batch)
                    # Its facts are sent: only its counts are kept.
                    following = SentBatch(replace(batch, facts={}), offsets, acks)
                if self._in_flight is not None:
                    await self._settle(consumer, self._in_flight)
                self._in_flight = following
            lag = await self._update_lag(consumer)
            if lag == 0 and self._in_flight is None:
                self.progressed()  # caught up: nothing is stuck
            # A batch short of full, and less than a batch left to read: the stream is caught up,
            # so the next batch may wait. An empty poll already waited POLL_MS; a backlog is taken
            # at once, also when a poll of it brought less than a batch (the fetches' size limit).
            paced = 0 < len(records) < most and (lag or 0) < INGEST_BATCH
            next_take = taken_at + MIN_BATCH_INTERVAL_S if paced else 0.0
        await self.settle_in_flight(consumer)  # stopping: the last batch sent is committed too

    async def settle_in_flight(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the batch sent and not yet committed, if any (before a rebalance, at a stop)."""
        async with self._settling:
            sent, self._in_flight = self._in_flight, None
            if sent is not None:
                await self._settle(consumer, sent)

    async def _send(self, producer: AIOKafkaProducer, batch: IngestedBatch) -> list[Any]:
        """Hand the batch's facts and dead letters to the producer; the futures of their acks."""
        sends = [
            await producer.send(self.facts_topic, value=value, partition=partition)
            for partition, facts in batch.facts.items()
            for value in split_to_fit(facts, encode_facts)
        ]
        sends += [
            await producer.send(TOPIC_DEAD_LETTERS, key=key, value=value)
            for key, value, _ in batch.dead_letters
        ]
        return sends

    async def _settle(self, consumer: AIOKafkaConsumer, sent: SentBatch) -> None:
        """Once the broker has every record of ``sent``: count it, then commit its offsets."""
        await asyncio.gather(*sent.acks)
        _count(sent.batch)
        if self.before_commit is not None:
            await self.before_commit()
        await self._commit(consumer, sent.offsets)
        self.progressed()

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        # Partitions this consumer no longer owns cannot be committed (aiokafka refuses the
        # whole commit): their next owner reads them again, which the deduplicate stage absorbs.
        owned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The facts are sent; whoever owns these partitions next sends them again, which the
            # deduplicate stage absorbs.
            log.warning("ingest commit failed (facts are sent, will be resent): %s", exc)

    @staticmethod
    async def _update_lag(consumer: AIOKafkaConsumer) -> int | None:
        """Records of the input topics not yet read: the high watermark of the last fetch minus
        the position, summed over this worker's partitions. Returns the total, None when the end
        of some partition is not known yet."""
        lag: Counter[str] = Counter()  # only topics whose end is known: no made-up zeros
        # A topic none of whose partitions this consumer owns (any more) has no lag here: a
        # stale value would be added to the other ingest processes' (IngestProcesses).
        owned = {tp.topic for tp in consumer.assignment()}
        for topic in INPUT_TOPICS:
            if topic not in owned:
                metrics.consumer_lag.labels(topic).set(0)
        known = True
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                known = False
            else:
                lag[tp.topic] += max(0, end - await consumer.position(tp))
        for topic, records in lag.items():
            metrics.consumer_lag.labels(topic).set(records)
        return sum(lag.values()) if known and consumer.assignment() else None


class _SettleBeforeRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits the batch in flight before partitions move (awaited by aiokafka before it
    rejoins), so that no one reads it again."""

    def __init__(self, runner: IngestRunner, consumer: AIOKafkaConsumer) -> None:
        self.runner, self.consumer = runner, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.settle_in_flight(self.consumer)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


def _count(batch: IngestedBatch) -> None:
    for topic, consumed in batch.consumed.items():
        metrics.events_consumed.labels(topic).inc(consumed)
    if batch.inactive:
        metrics.inactive_activities.inc(batch.inactive)
    for _, _, reason in batch.dead_letters:
        metrics.dead_letters.labels(reason).inc()
