"""``cci demo``'s traffic: the history (``generate``) as fast as the broker takes it, then live
traffic at a steady rate, cohort by cohort of fresh users."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer

from streams.dev.generate import Dataset, generate
from streams.dev.produce import Record, key_of
from streams.kafka.embedded import ONE_RECORD_BATCH_BYTES
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS

HISTORY_MONTHS = 3
HISTORY_SEED = 7
LIVE_SEED = 1_000_003
# Records in flight while loading the history, before waiting for their acknowledgements.
HISTORY_WINDOW = 1000
# A cohort's profiles go out this long before its events, so the worker's profile reader has them
# when the events are enriched (an event seen before its profile counts as segment "unknown").
PROFILE_LEAD_S = 2.0
# Keep this many seconds of live events generated ahead; a cohort is generated in one go.
LIVE_BUFFER_S = 4.0
COHORT_SECONDS = 2.0  # users per cohort = rate × this (each user yields ~1.4 events a month)
MIN_COHORT_USERS = 10
MAX_COHORT_USERS = 5000
FEED_TICK_S = 0.05
# After a stall (a slow cohort, a busy broker) send at most this much backlog at once.
MAX_BURST_S = 0.5

TIME_FIELDS = {TOPIC_ACTIVITY: "occurred_at", TOPIC_TICKETS: "created_at"}


@dataclass
class TrafficCounters:
    """What the feeder has had acknowledged, for the header line."""

    history_total: int = 0
    history_sent: int = 0
    live_sent: int = 0
    live: bool = False  # the history is loaded; live traffic runs

    @property
    def events(self) -> int:
        return self.history_sent + self.live_sent


def history_events(dataset: Dataset) -> Iterator[tuple[str, bytes]]:
    """Activity and tickets interleaved in proportion, so both fill the table as they load.

    Each list is in delivery order (month by month); merging by relative position keeps the two in
    step with each other.
    """

    def positioned(topic: str, values: list[bytes]) -> Iterator[tuple[float, str, bytes]]:
        return (((index + 1) / len(values), topic, value) for index, value in enumerate(values))

    merged = heapq.merge(
        positioned(TOPIC_ACTIVITY, dataset.activity),
        positioned(TOPIC_TICKETS, dataset.tickets),
        key=lambda entry: entry[0],
    )
    for _, topic, value in merged:
        yield topic, value


@dataclass
class Cohort:
    """Users the history did not cover, showing up now: profiles first, then their events."""

    profiles: list[Record]
    events: deque[tuple[str, dict[str, Any]]]
    ready_at: float = 0.0  # loop time after which its events may be sent


def cohort_users(rate: int) -> int:
    return max(MIN_COHORT_USERS, min(MAX_COHORT_USERS, math.ceil(rate * COHORT_SECONDS)))


def live_cohort(index: int, users: int, now: datetime, zone: ZoneInfo) -> Cohort:
    """One month of ``generate`` traffic for ``users`` fresh users, renamed to be unique.

    Users are renamed per cohort (their profiles go out with them) and tickets too, so every
    cohort adds customers and contacts; a cohort's resent and amended tickets keep sharing an id,
    so the worker still has duplicates to discard. The generator's mix carries over: free users
    write in more than paid ones, new customers more than long-time ones.
    """
    dataset = generate(users, 1, LIVE_SEED + index, now, zone)
    prefix = f"c{index:05d}"

    def rename(record: dict[str, Any]) -> dict[str, Any]:
        record["user_id"] = _prefixed(record["user_id"], "user-", prefix)
        if "ticket_id" in record:
            record["ticket_id"] = _prefixed(record["ticket_id"], "tkt-", prefix)
        return record

    profiles = [rename(orjson.loads(value)) for value in dataset.profiles]
    events = [(TOPIC_ACTIVITY, rename(orjson.loads(v))) for v in dataset.activity]
    events += [(TOPIC_TICKETS, rename(orjson.loads(v))) for v in dataset.tickets]
    random.Random(LIVE_SEED + index).shuffle(events)
    return Cohort(
        profiles=[(_key_of_record(p), orjson.dumps(p)) for p in profiles], events=deque(events)
    )


def _prefixed(identifier: str, stem: str, prefix: str) -> str:
    return f"{stem}{prefix}-{identifier.removeprefix(stem)}"


def _key_of_record(record: Mapping[str, Any]) -> bytes | None:
    user_id = record.get("user_id")
    return user_id.encode() if isinstance(user_id, str) else None


def retimed(topic: str, record: Mapping[str, Any], moment: datetime) -> Record:
    """The record as sent now: its event time is the moment it is produced."""
    stamp = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _key_of_record(record), orjson.dumps({**record, TIME_FIELDS[topic]: stamp})


@dataclass
class TrafficFeeder:
    """Produces the history's events as fast as the broker takes them, then live traffic."""

    bootstrap: str
    history: Dataset
    rate: int
    zone: ZoneInfo
    counters: TrafficCounters

    def __post_init__(self) -> None:
        self.counters.history_total = len(self.history.activity) + len(self.history.tickets)

    async def run(self) -> None:
        # One record per batch: the embedded broker misreports offsets of multi-record batches.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            max_batch_size=ONE_RECORD_BATCH_BYTES,
            linger_ms=0,
        )
        await producer.start()
        try:
            await self._history(producer)
            await self._live(producer)
        finally:
            await producer.stop()

    async def _history(self, producer: AIOKafkaProducer) -> None:
        pending: list[asyncio.Future[Any]] = []
        for topic, value in history_events(self.history):
            pending.append(await producer.send(topic, value=value, key=key_of(value)))
            if len(pending) >= HISTORY_WINDOW:
                self.counters.history_sent += len(await asyncio.gather(*pending))
                pending.clear()
        self.counters.history_sent += len(await asyncio.gather(*pending))

    async def _live(self, producer: AIOKafkaProducer) -> None:
        self.counters.live = True
        loop = asyncio.get_running_loop()
        cohorts: deque[Cohort] = deque()
        next_cohort = 0
        tokens = 0.0
        last = loop.time()
        while True:
            if sum(len(c.events) for c in cohorts) < self.rate * LIVE_BUFFER_S:
                cohort = await asyncio.to_thread(
                    live_cohort, next_cohort, cohort_users(self.rate), datetime.now(UTC), self.zone
                )
                next_cohort += 1
                await self._send_all(producer, TOPIC_PROFILES, cohort.profiles)
                cohort.ready_at = loop.time() + PROFILE_LEAD_S
                cohorts.append(cohort)
                continue
            await asyncio.sleep(FEED_TICK_S)
            now = loop.time()
            tokens = min(tokens + (now - last) * self.rate, self.rate * MAX_BURST_S)
            last = now
            batch: list[tuple[str, Record]] = []
            moment = datetime.now(UTC)
            while tokens >= 1 and cohorts and cohorts[0].ready_at <= now:
                head = cohorts[0]
                topic, record = head.events.popleft()
                if not head.events:
                    cohorts.popleft()
                batch.append((topic, retimed(topic, record, moment)))
                tokens -= 1
            if batch:
                self.counters.live_sent += await self._send_events(producer, batch)

    async def _send_events(
        self, producer: AIOKafkaProducer, batch: list[tuple[str, Record]]
    ) -> int:
        futures = [
            await producer.send(topic, value=value, key=key) for topic, (key, value) in batch
        ]
        return len(await asyncio.gather(*futures))

    async def _send_all(
        self, producer: AIOKafkaProducer, topic: str, records: Iterable[Record]
    ) -> None:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
