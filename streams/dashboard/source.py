"""The dashboard's data source inside a worker: ``cci-updates`` and ``cci-alerts`` followed from
the beginning (every partition, no consumer group) into a ``DashboardView``, and a change signal
the live streams wait on.

Every worker reads both topics whole, so each one's dashboard shows the full picture whatever
partitions it owns. Replaying the topics at start is cheap: they are compacted, one record per
(month, dimension, segment) and per alert.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from streams.dashboard.view import DashboardView, sse_event
from streams.follow import TopicFollower
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, Settings


class DashboardSource:
    """The view, kept current by topic followers; ``generation`` counts the changes applied."""

    def __init__(self, settings: Settings) -> None:
        self.view = DashboardView.from_settings(settings)
        self.followers = [
            TopicFollower(
                settings.kafka_bootstrap,
                topic,
                lambda key, value, topic=topic: self.apply(topic, key, value),
                settings.kafka_client_kwargs(),
                true_ends=bool(settings.embedded_broker),
                after_poll=self.publish_changes,
            )
            for topic in (TOPIC_UPDATES, TOPIC_ALERTS)
        ]
        self.generation = 0
        self._unpublished = False
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        # Live events of the current generation by (month, oldest retained month): every client
        # watching the same month shares one rendering.
        self._events: dict[tuple[str | None, int], bytes] = {}
        self._events_generation = -1

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._unpublished |= self.view.apply(topic, key, value)

    def publish_changes(self) -> None:
        """One wake-up per poll, however many records it held: bursts reach clients once."""
        # A month passing out of retention changes what is shown even when no record arrives.
        self._unpublished |= self.view.forget_expired(datetime.now(UTC))
        if self._unpublished:
            self._unpublished = False
            self.generation += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def live_event(self, month: str | None) -> bytes:
        """The ``cci`` server-sent event of ``month`` (None: the newest) as of now."""
        now = datetime.now(UTC)
        if self._events_generation != self.generation:
            self._events.clear()
            self._events_generation = self.generation
        key = (month, self.view.oldest_month(now))
        if key not in self._events:
            self._events[key] = sse_event("cci", self.view.live(month, now))
        return self._events[key]

    async def start(self) -> None:
        for follower in self.followers:
            await follower.start()

    async def stop(self) -> None:
        self.close()
        for follower in self.followers:
            await follower.stop()

    def close(self) -> None:
        """End the live streams (the web server waits for open requests when it stops)."""
        self.closed.set()
        self._changed.set()

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        """The generation once it differs from ``seen``, or after ``timeout`` or closing."""
        if self.generation == seen and not self.closed.is_set():
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        return self.generation

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the source closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), seconds)
