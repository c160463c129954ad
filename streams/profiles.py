"""The user-profile table: every profile, fully loaded before any event is enriched.

Each worker reads the whole compacted ``user-profile`` topic (all partitions, no consumer group) up
to the end offsets it finds at start, then keeps following it. Faust's GlobalTable would do the same
but can loop forever in recovery with several workers (its own docstring), so this is a plain
aiokafka reader. Invalid profiles are logged and counted; they cannot be dead-lettered from here
without racing the ingest agent's offsets, and a later valid profile replaces them anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.enrich import Profile, newer_profile, profile_from_event
from streams.validate import InvalidEvent, parse_profile

log = logging.getLogger(__name__)


class ProfileBook:
    """user_id → newest valid Profile, loaded from the profile topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        zone: ZoneInfo,
        max_event_bytes: int,
        client_kwargs: dict[str, Any] | None = None,
        on_invalid: Callable[[str], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.zone = zone
        self.max_event_bytes = max_event_bytes
        self.client_kwargs = client_kwargs or {}
        self.on_invalid = on_invalid
        self.profiles: dict[str, Profile] = {}
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def get(self, user_id: str) -> Profile | None:
        return self.profiles.get(user_id)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            # A tombstone deletes the profile (compacted-topic convention).
            if key is not None:
                self.profiles.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            event = parse_profile(value, self.max_event_bytes)
        except InvalidEvent as exc:
            log.warning("invalid profile ignored: %s", exc)
            if self.on_invalid:
                self.on_invalid(exc.reason)
            return
        profile = profile_from_event(event, self.zone)
        self.profiles[event.user_id] = newer_profile(self.profiles.get(event.user_id), profile)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="profile-book")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_loaded(self) -> None:
        await self.loaded.wait()

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.client_kwargs,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            while partitions is None:
                # The topic may not exist yet (no profiles is a valid state): load nothing, retry.
                self.loaded.set()
                await asyncio.sleep(5)
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if end[tp] > 0}
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for record in records:
                        self.apply(record.key, record.value)
                if pending:
                    pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
                if not pending and not self.loaded.is_set():
                    log.info("profiles loaded: %d users", len(self.profiles))
                    self.loaded.set()
        finally:
            await consumer.stop()
