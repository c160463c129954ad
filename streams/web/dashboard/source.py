"""The dashboard's data source inside a worker: ``cci-updates`` and ``cci-alerts`` followed from
the beginning (every partition, no consumer group) into a ``DashboardView``, and a change signal
the live streams wait on.

Every worker reads both topics whole, so each one's dashboard shows the full picture whatever
partitions it owns. Replaying the topics at start is cheap: they are compacted, one record per
(month, dimension, segment) and per alert.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass

from mode import Service

from streams.clock import clock_for
from streams.kafka.follow import TopicFollower
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, Settings
from streams.web.dashboard.view import DashboardView, Record, live_changes, sse_event


@dataclass(frozen=True)
class Sent:
    """What a live stream was last sent: its month key, the generation and the payload."""

    key: tuple[str | None, int]
    generation: int
    payload: Record


class DashboardSource(Service):
    """The view, kept current by topic followers (dependencies: started and stopped with it);
    ``generation`` counts the changes applied."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.view = DashboardView.from_settings(settings)
        self.clock = clock_for(settings)  # what "now" is: the months retention still shows
        self.followers = [
            self.add_dependency(
                TopicFollower(
                    settings.kafka_bootstrap,
                    topic,
                    lambda key, value, topic=topic: self.apply(topic, key, value),
                    settings.kafka_client_kwargs(),
                    true_ends=bool(settings.embedded_broker),
                    after_poll=self.publish_changes,
                )
            )
            for topic in (TOPIC_UPDATES, TOPIC_ALERTS)
        ]
        self.generation = 0
        self._unpublished = False
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        # Live payloads and events of the current generation, by (month, oldest retained month)
        # and the generation a stream was last sent: streams at the same point share them.
        self._payloads: dict[tuple[str | None, int], Record] = {}
        self._events: dict[tuple[object, ...], bytes | None] = {}
        self._events_generation = -1
        self.max_live_streams = settings.live_streams
        self.live_streams = 0  # open now
        self.max_live_streams_per_client = settings.live_streams_per_client
        self.live_streams_by_client: collections.Counter[str] = collections.Counter()

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._unpublished |= self.view.apply(topic, key, value)

    def publish_changes(self) -> None:
        """One wake-up per poll, however many records it held: bursts reach clients once."""
        # A month passing out of retention changes what is shown even when no record arrives.
        self._unpublished |= self.view.forget_expired(self.clock.now())
        if self._unpublished:
            self._unpublished = False
            self.generation += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def live_update(self, month: str | None, sent: Sent | None) -> tuple[bytes | None, Sent]:
        """The event for a live stream of ``month`` (None: the newest) that was last sent
        ``sent``: the whole ``cci`` payload first (or when the month's shape changed with
        retention), then ``cci-changes`` events with only what changed (None: nothing did).
        Streams at the same point share one rendering of each."""
        now = self.clock.now()
        if self._events_generation != self.generation:
            self._payloads.clear()
            self._events.clear()
            self._events_generation = self.generation
        key = (month, self.view.oldest_month(now))
        payload = self._payloads.get(key)
        if payload is None:
            payload = self._payloads[key] = self.view.live(month, now)
        now_sent = Sent(key, self.generation, payload)
        if sent is None or sent.key != key:
            event_key: tuple[object, ...] = (key, None)
            if event_key not in self._events:
                self._events[event_key] = sse_event("cci", payload)
            return self._events[event_key], now_sent
        event_key = (key, sent.generation)
        if event_key not in self._events:
            changes = live_changes(sent.payload, payload)
            self._events[event_key] = sse_event("cci-changes", changes) if changes else None
        return self._events[event_key], now_sent

    async def on_stop(self) -> None:
        self.close()  # mode then stops the followers

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
