"""Is the broker there, and is it still the broker the worker's state was built from?

Every ``PROBE_INTERVAL_S`` a group-less consumer asks the broker for its metadata and the end
offsets of the topics the worker reads and writes. The answer feeds ``/health`` (503 with a
reason while the broker is unreachable), the ``cci_broker_up`` gauge and the worker's own log
lines (the client's are summarised, see ``streams/logs.py``).

A broker that answers without a topic it had, or with an end offset lower than before, lost data
(typically an empty broker at the same address: the embedded one keeps everything in memory).
The worker's state, committed offsets and store then describe records the broker no longer has;
carrying on would mix the two silently, so the worker stops with what to do
(``docs/operations.md``, "The broker lost data") and exit status ``EXIT_BROKER_LOST_DATA``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import metrics
from streams.loops import Loop
from streams.settings import Settings

log = logging.getLogger("streams.broker")

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 3.0
STILL_DOWN_EVERY_S = 60.0  # how often an outage is logged again while it lasts
EXIT_BROKER_LOST_DATA = 3


def stop_for_lost_data(message: str) -> None:
    """Log why and exit at once with ``EXIT_BROKER_LOST_DATA``."""
    log.critical(message)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_BROKER_LOST_DATA)


class BrokerWatch(Loop):
    """Probes the broker every ``PROBE_INTERVAL_S``; a probe that fails is the broker "down", not
    a failure of the loop. ``cci worker`` starts it before the app and stops it after: the stop
    deadline depends on its answer (``streams/worker/run.py``)."""

    what = "broker watch"

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        on_lost_data: Callable[[str], None] = stop_for_lost_data,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.topics = tuple(topics)
        self.on_lost_data = on_lost_data
        self.up = False
        self.reason = "not asked yet"
        self._down_since: float | None = None
        self._last_said: float = 0.0
        self._ends: dict[TopicPartition, int] = {}  # highest end offset seen per partition
        metrics.broker_up.set(0)

    async def run(self) -> None:
        consumer: AIOKafkaConsumer | None = None
        try:
            while not self.should_stop:
                try:
                    if consumer is None:
                        consumer = self._consumer()
                        await asyncio.wait_for(consumer.start(), PROBE_TIMEOUT_S)
                    ends = await asyncio.wait_for(self._end_offsets(consumer), PROBE_TIMEOUT_S)
                except Exception as exc:  # unreachable, timed out, refused: all "down"
                    self._went_down(f"{type(exc).__name__}: {exc}".strip(": "))
                    if consumer is not None:
                        with contextlib.suppress(Exception):
                            await consumer.stop()
                        consumer = None
                else:
                    self._check(ends)
                    self._came_up()
                await self.sleep(PROBE_INTERVAL_S)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.settings.app_id}-broker-watch",
            enable_auto_commit=False,
            request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
            **self.settings.kafka_client_kwargs(),
        )

    async def _end_offsets(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        """End offsets of the partitions of the watched topics the broker has (a missing topic
        has no entries)."""
        client = consumer._client  # the metadata of every topic, fresh, in one request
        await client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in client.cluster.partitions_for_topic(topic) or ()
        ]
        return dict(await consumer.end_offsets(partitions)) if partitions else {}

    def _check(self, ends: dict[TopicPartition, int]) -> None:
        lost = []
        for tp, before in sorted(self._ends.items()):
            now = ends.get(tp)
            if now is None:
                lost.append(f"{tp.topic}[{tp.partition}] is gone (it ended at offset {before})")
            elif now < before:
                lost.append(f"{tp.topic}[{tp.partition}] ends at {now}, it ended at {before}")
        if lost:
            shown = "; ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            self.up, self.reason = False, f"the broker lost data: {shown}"
            metrics.broker_up.set(0)
            self.on_lost_data(
                f"the broker lost data: {shown} (an empty or different broker at "
                f"{self.settings.kafka_bootstrap}?). This worker's state, committed offsets and "
                "store describe records the broker no longer has, so it stops rather than mix "
                "the two. Restore the broker's data, or start over against this broker: see "
                "'The broker lost data' in docs/operations.md"
            )
            return
        for tp, end in ends.items():
            self._ends[tp] = max(end, self._ends.get(tp, 0))

    def _went_down(self, reason: str) -> None:
        now = time.monotonic()
        self.up, self.reason = False, f"broker unreachable at {self.settings.kafka_bootstrap}"
        metrics.broker_up.set(0)
        if self._down_since is None:
            self._down_since, self._last_said = now, now
            log.error(
                "broker unreachable at %s (%s); the pipeline waits for it: /health answers 503 "
                "and cci_broker_up is 0 until it is back",
                self.settings.kafka_bootstrap,
                reason,
            )
        elif now - self._last_said >= STILL_DOWN_EVERY_S:
            self._last_said = now
            log.error(
                "broker still unreachable at %s after %.0f s (%s)",
                self.settings.kafka_bootstrap,
                now - self._down_since,
                reason,
            )

    def _came_up(self) -> None:
        if self._down_since is not None and self._ends:
            log.warning(
                "broker reachable again at %s after %.0f s",
                self.settings.kafka_bootstrap,
                time.monotonic() - self._down_since,
            )
        self._down_since = None
        self.up, self.reason = True, ""
        metrics.broker_up.set(1)
