"""Every workaround for the embedded development broker (Tansu 0.6), in one place.

Switched on by ``CCI_EMBEDDED_BROKER`` (``auto``: detected from the cluster id the embedded broker
is started with; docs/embedded-broker.md). Against real Kafka none of this runs.

The quirk that matters most: Tansu answers ListOffsets with *base offset of the partition's last
batch + 1*, so after a multi-record batch the reported end (high watermark) lags the real one.
Anything that reads "to the end" asks ``true_end_offsets`` here instead of trusting it, so the
worker's producer may batch like it does against Kafka (one-record batches crawled: one record
per partition per produce round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.settings import (
    EMBEDDED_FETCH_MAX_WAIT_MS,
    EMBEDDED_INTERNAL_FETCH_MAX_WAIT_MS,
    Settings,
)

log = logging.getLogger("streams")

# How long a probe for the true end waits for the last batch of a partition before it gives up and
# keeps the reported end (with a warning): that batch exists, so only a broker in trouble is slow.
# The cluster id `cci dev broker` gives the embedded broker: CCI_EMBEDDED_BROKER=auto looks for it.
CLUSTER_ID = "cci-embedded"
END_PROBE_TIMEOUT_S = 30.0
# More records than a produce batch of PRODUCER_BATCH_BYTES can hold.
PROBE_MAX_POLL_RECORDS = 1_000_000
# The worker's produce batches on the embedded broker. Each partition has one batch in flight per
# round trip, and its round trips are slow while a consumer long-polls the partition: one record
# per batch moved 158 records/s to one partition, 16 KiB batches (Faust's default) 9,700/s,
# 256 KiB batches 20,000/s (200-byte records, docs/embedded-broker.md).
PRODUCER_BATCH_BYTES = 256 * 1024
# How long `auto` keeps asking a broker that does not answer yet before giving up.
DETECT_TIMEOUT_S = 30.0
DETECT_RETRY_S = 1.0


class DetectError(RuntimeError):
    """The broker did not answer, so ``CCI_EMBEDDED_BROKER=auto`` could not decide."""


def is_embedded_cluster(cluster_id: str | None) -> bool:
    """True for the cluster id ``cci dev broker``, the tests and the demo start Tansu with.

    The cluster id is Kafka-standard (Metadata/DescribeCluster), so asking never bothers Kafka.
    """
    return cluster_id == CLUSTER_ID


async def detect(settings: Settings, timeout_s: float = DETECT_TIMEOUT_S) -> bool:
    """Ask the broker for its cluster id; retry until ``timeout_s`` while it does not answer."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last_error: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_kwargs()
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return is_embedded_cluster(cluster.get("cluster_id"))
        except Exception as exc:  # any failure: not reachable yet, ask again
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(DETECT_RETRY_S)
    raise DetectError(
        f"CCI_EMBEDDED_BROKER=auto: the broker at {settings.kafka_bootstrap} did not answer within "
        f"{timeout_s:.0f} s ({last_error!r}); start it, or set CCI_EMBEDDED_BROKER=true or false"
    )


def resolve(settings: Settings) -> Settings:
    """``settings`` with ``embedded_broker`` decided (``auto`` asks the broker)."""
    if settings.embedded_broker is not None:
        return settings
    embedded = asyncio.run(detect(settings))
    log.info("CCI_EMBEDDED_BROKER=auto: %s", "embedded broker" if embedded else "Kafka")
    return replace(settings, embedded_broker=embedded)


async def true_end_offsets(
    bootstrap: str,
    reported: Mapping[TopicPartition, int],
    client_kwargs: Mapping[str, Any] | None = None,
) -> dict[TopicPartition, int]:
    """The real end offset (last offset + 1) of each partition, given the broker's ``reported``.

    The reported end is the base offset of the last batch + 1. A fetch from that base offset
    returns the whole last batch (Kafka fetches whole batches), whose last record is the real end.
    No "nothing more came back" guess: on a loaded machine an empty poll proves nothing.
    """
    ends = dict(reported)
    probed = [tp for tp, end in reported.items() if end > 0]
    if not probed:
        return ends
    # One poll hands over the whole fetched batch (aiokafka's default stops at 500 records).
    options = {
        **dict(client_kwargs or {}),
        "fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS,
        "max_poll_records": PROBE_MAX_POLL_RECORDS,
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        consumer.assign(probed)
        for tp in probed:
            consumer.seek(tp, reported[tp] - 1)
        waiting = set(probed)  # partitions whose last batch has not come back yet
        deadline = time.monotonic() + END_PROBE_TIMEOUT_S
        while waiting:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                log.warning(
                    "no last batch of %s within %.0f s: kept the reported end",
                    waiting,
                    END_PROBE_TIMEOUT_S,
                )
                break
            batches = await consumer.getmany(*waiting, timeout_ms=min(remaining_ms, 1000))
            for tp, records in batches.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    waiting.discard(tp)
        return ends
    finally:
        await consumer.stop()


# --- the Faust worker ----------------------------------------------------------------------------


def app_options(settings: Settings) -> dict[str, Any]:
    """Options of ``faust.App`` for the embedded broker (none against Kafka)."""
    if not settings.embedded_broker:
        return {}
    # Recovery reads to the true end of each changelog (EmbeddedBrokerConsumer), so the producer
    # may batch: no more one-record batches, which crawled (issue 18).
    return {"producer_max_batch_size": PRODUCER_BATCH_BYTES}


def install(app: Any, settings: Settings) -> None:
    """Give a ``faust.App`` the embedded broker's consumer (no-op against Kafka)."""
    if not settings.embedded_broker:
        return
    thread_class = type(
        "EmbeddedBrokerConsumerThread",
        (EmbeddedBrokerConsumerThread,),
        {"bootstrap": settings.kafka_bootstrap, "client_kwargs": settings.kafka_client_kwargs()},
    )
    app.transport.Consumer = type(
        "EmbeddedBrokerConsumer", (EmbeddedBrokerConsumer,), {"thread_class": thread_class}
    )


class EmbeddedBrokerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    bootstrap: str = ""
    client_kwargs: Mapping[str, Any] = {}

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes a 1,500 ms fetch wait; read by aiokafka when its fetcher starts.
        consumer._fetch_max_wait_ms = EMBEDDED_INTERNAL_FETCH_MAX_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        # Table recovery reads a changelog up to this: it must be the true end.
        reported = await super()._highwaters(partitions)
        tps = {TopicPartition(tp.topic, tp.partition): tp for tp in reported}
        true = await true_end_offsets(
            self.bootstrap, {tp: reported[tps[tp]] for tp in tps}, self.client_kwargs
        )
        return {tps[tp]: end for tp, end in true.items()}


class EmbeddedBrokerConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    thread_class: type[EmbeddedBrokerConsumerThread] = EmbeddedBrokerConsumerThread

    def _new_consumer_thread(self) -> EmbeddedBrokerConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)


# The embedded broker (Tansu 0.6) answers ListOffsets with the base offset of the partition's
# last batch + 1, so a batch of many records makes the high watermark lag the real end and a
# consumer that waits to be "caught up" never is. A batch limit below any record's size makes
# each record its own batch (aiokafka always admits one record into an empty batch).
ONE_RECORD_BATCH_BYTES = 16
