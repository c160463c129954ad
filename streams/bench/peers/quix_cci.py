"""The CCI job written with Quix Streams: the peer ``cci bench`` measures the pipeline against.

    user-activity  ─ parse + enrich ─ dedup user-month (state per user) ┐
    ticket-created ─ parse + enrich ─ dedup ticket (state per user)     ┴ concat
        ─ group_by(month) ─ count per segment (state per month) ─ OUTPUT_TOPIC

It runs as a process of its own (``cci bench`` starts it), so its RSS is its own. It computes what
the pipeline computes, exactly, as Quix Streams intends such a job to be written:

* Parsing and enrichment are the pipeline's own (``streams.pipeline.validate``,
  ``streams.pipeline.enrich``): the same cost per event and the same meaning. Profiles are read
  completely before processing starts, as the worker does (and, unlike the worker, not followed
  afterwards).
* Deduplication keeps, per user-month and per ticket, the winning version (earliest event time,
  ties by the smaller attribute tuple) in Quix state, and emits a delta (+1 for the new winner's
  segments, -1 for the one it replaces) only when the winner changes.
* Counting re-keys the deltas by month (``group_by``, a repartition topic) and keeps one counter
  per (dimension, segment) in Quix state; every delta publishes the absolute figures it changed,
  keyed by month, as ``{"month", "figures": [[dimension, segment, tickets, active_users], …]}``.

Choices that favour the peer, so the ratio pipeline/peer is not flattered (docs/performance.md):

* State is Quix's in-memory store (``MemoryStore``) without changelog topics
  (``use_changelog_topics=False``): the embedded broker misreports high watermarks of
  multi-record batches, which Quix's recovery reads. The pipeline writes its changelog; the peer
  writes none, so it could not recover its state after a restart.
* Deduplication is keyed by the message key, so it relies on the inputs being keyed by
  ``user_id`` and on every version of a ticket carrying the same ``user_id`` (``cci bench`` and
  ``cci produce`` key by ``user_id``). The pipeline relies on neither: it repartitions facts by
  ``user_id`` and ``ticket_id`` first.
* Counts travel as deltas: exact when nothing is processed twice, as in a benchmark run. After a
  crash at-least-once delivery could apply a delta twice; the pipeline's absolute partials cannot.
* Invalid events are dropped, not dead-lettered (generated data has none).

Output records carry the time they were sent as their timestamp (Quix would copy the input's).
Status lines (JSON) go to ``--status-file``: ``ready`` once the profiles are loaded (with the RSS
then) and ``first_message`` at the first input record processed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.state.memory import MemoryStore

from streams import domain
from streams.pipeline.enrich import Attributes, Enricher, Profile
from streams.pipeline.validate import InvalidEvent, parse_activity, parse_ticket
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, Settings, load_settings
from streams.worker.profiles import ProfileBook

GLOBAL_KEY = f"{domain.ALL}|{domain.ALL}"
CHANNEL_PREFIX = f"{domain.CHANNEL}|"
CHANNELS_KEY = "#channels"  # the month's channel segments: republished when the global count moves
ACTIVE, TICKET = "a", "t"
NOW_REFRESH_S = 1.0  # "now" (retention, future timestamps) is read once a second, not per event

Delta = list[Any]  # [attributes, +1 | -1]


# --- pure rules ----------------------------------------------------------------------------------


def _wins(ts: int, attributes: list[str], held: list[Any] | None) -> bool:
    """Earliest version wins, ties broken by the smaller attribute tuple (the pipeline's rule)."""
    return held is None or (ts, attributes) < (held[0], held[1])


def user_month_change(
    held: list[Any] | None, ts: int, attributes: Attributes
) -> tuple[list[Any] | None, list[Delta]]:
    """A user-month's new state ([ts, attributes]) and count deltas, given one of its versions.

    (None, []) when the held winner stays.
    """
    candidate = list(attributes)
    if not _wins(ts, candidate, held):
        return None, []
    if held is None:
        return [ts, candidate], [[candidate, 1]]
    if held[1] == candidate:
        return [ts, candidate], []  # earlier, with the same segments: the counts stay
    return [ts, candidate], [[held[1], -1], [candidate, 1]]


def ticket_change(
    held: list[Any] | None, ts: int, attributes: Attributes, month: str
) -> tuple[list[Any] | None, list[tuple[str, list[Delta]]]]:
    """A ticket's new state ([ts, attributes, month]) and count deltas per month.

    (None, []) when the held winner stays. An earlier version may fall in another month: the
    ticket then leaves the month it was counted in.
    """
    candidate = list(attributes)
    if not _wins(ts, candidate, held):
        return None, []
    winner = [ts, candidate, month]
    if held is None:
        return winner, [(month, [[candidate, 1]])]
    if held[2] != month:
        return winner, [(held[2], [[held[1], -1]]), (month, [[candidate, 1]])]
    if held[1] == candidate:
        return winner, []
    return winner, [(month, [[held[1], -1], [candidate, 1]])]


def segment_keys(dimensions: tuple[str, ...], attributes: Iterable[str]) -> list[str]:
    return [f"{d}|{s}" for d, s in domain.segment_keys(dimensions, tuple(attributes))]


class MonthCounts:
    """The count step of one month over a key-value state (Quix's, or a dict in tests)."""

    def __init__(
        self,
        get: Callable[[str], Any],
        set_: Callable[[str, Any], None],
        user_dimensions: tuple[str, ...],
    ) -> None:
        self.get = get
        self.set = set_
        self.user_dimensions = user_dimensions
        self.ticket_dimensions = (*user_dimensions, domain.CHANNEL)

    def apply(self, kind: str, deltas: list[Delta]) -> list[list[Any]]:
        """Apply a dedup step's deltas; the figures they change as [dimension, segment, t, u]."""
        column = 0 if kind == TICKET else 1
        dimensions = self.ticket_dimensions if kind == TICKET else self.user_dimensions
        counts: dict[str, list[int]] = {}
        for attributes, sign in deltas:
            for key in segment_keys(dimensions, attributes):
                held = counts.get(key) or self.get(key) or [0, 0]
                held[column] += sign
                counts[key] = held
        for key, held in counts.items():
            self.set(key, held)
        touched = set(counts)
        channels: list[str] = self.get(CHANNELS_KEY) or []
        if kind == TICKET:
            new = [k for k in touched if k.startswith(CHANNEL_PREFIX) and k not in channels]
            if new:
                channels = sorted({*channels, *new})
                self.set(CHANNELS_KEY, channels)
        elif GLOBAL_KEY in touched:
            touched.update(channels)  # every channel's denominator is the global count
        global_users = (counts.get(GLOBAL_KEY) or self.get(GLOBAL_KEY) or [0, 0])[1]
        figures = []
        for key in sorted(touched):
            tickets, users = counts.get(key) or self.get(key) or [0, 0]
            if key.startswith(CHANNEL_PREFIX):
                # As the batch recount: a channel exists while it has tickets.
                users = global_users if tickets else 0
            dimension, _, segment = key.partition("|")
            figures.append([dimension, segment, tickets, users])
        return figures


# --- Quix glue -----------------------------------------------------------------------------------


class StatusFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.first_message_seen = False

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a") as status:
            status.write(json.dumps({"event": event, "at": time.time(), **fields}) + "\n")

    def first_message(self) -> None:
        if not self.first_message_seen:
            self.first_message_seen = True
            self.write("first_message")


def rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


async def load_profiles(settings: Settings) -> dict[str, Profile]:
    book = ProfileBook(
        settings.kafka_bootstrap,
        TOPIC_PROFILES,
        settings.zone,
        settings.max_event_bytes,
        settings.kafka_client_kwargs(),
    )
    await book.start()
    try:
        await book.wait_loaded()
    finally:
        await book.stop()
    return book.profiles


class Clock:
    """datetime.now(UTC), refreshed at most once a second."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.read_at = time.monotonic()

    def __call__(self) -> datetime:
        if time.monotonic() - self.read_at > NOW_REFRESH_S:
            self.now = datetime.now(UTC)
            self.read_at = time.monotonic()
        return self.now


def build(
    app: Application,
    settings: Settings,
    profiles: dict[str, Profile],
    output: str,
    status: StatusFile,
) -> None:
    enricher = Enricher.from_settings(settings, profiles.get)
    user_dimensions = domain.user_dimensions(settings.extra_dimensions)
    max_bytes = settings.max_event_bytes
    clock = Clock()
    raw = {"key_deserializer": "bytes", "value_deserializer": "bytes"}

    def dedup_activity(value: bytes, key: Any, timestamp: int, headers: Any, state: Any) -> Any:
        status.first_message()
        try:
            fact = enricher.active_fact(parse_activity(value, max_bytes), clock())
        except InvalidEvent:
            return []
        if fact is None:
            return []
        label = domain.month_label(fact.month)
        winner, deltas = user_month_change(state.get(label), fact.ts, fact.attributes)
        if winner is not None:
            state.set(label, winner)
        return [{"k": ACTIVE, "m": label, "d": deltas}] if deltas else []

    def dedup_ticket(value: bytes, key: Any, timestamp: int, headers: Any, state: Any) -> Any:
        status.first_message()
        try:
            fact = enricher.ticket_fact(parse_ticket(value, max_bytes), clock())
        except InvalidEvent:
            return []
        state_key = f"t|{fact.ticket_id}"
        label = domain.month_label(fact.month)
        winner, changes = ticket_change(state.get(state_key), fact.ts, fact.attributes, label)
        if winner is not None:
            state.set(state_key, winner)
        return [{"k": TICKET, "m": month, "d": deltas} for month, deltas in changes]

    def count(value: dict[str, Any], key: Any, timestamp: int, headers: Any, state: Any) -> Any:
        month = MonthCounts(state.get, state.set, user_dimensions)
        return {"month": value["m"], "figures": month.apply(value["k"], value["d"])}

    activity = app.dataframe(app.topic(TOPIC_ACTIVITY, **raw))
    activity.register_store(store_type=MemoryStore)
    activity = activity.apply(dedup_activity, stateful=True, expand=True, metadata=True)
    tickets = app.dataframe(app.topic(TOPIC_TICKETS, **raw))
    tickets.register_store(store_type=MemoryStore)
    tickets = tickets.apply(dedup_ticket, stateful=True, expand=True, metadata=True)
    facts = activity.concat(tickets)
    by_month = facts.group_by(lambda delta: delta["m"], name="month")
    by_month.register_store(store_type=MemoryStore)
    by_month = by_month.apply(count, stateful=True, metadata=True)
    # Quix stamps output with the input's timestamp; the bench times a result by when it is sent.
    by_month = by_month.set_timestamp(
        lambda value, key, timestamp, headers: time.time_ns() // 10**6
    )
    by_month.to_topic(app.topic(output, key_serializer="str", value_serializer="json"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group", default="cci-bench-quix")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--status-file", type=Path)
    args = parser.parse_args(argv)
    # Broker, time zone, retention, dimensions: the same CCI_* settings as the worker.
    settings = load_settings()
    status = StatusFile(args.status_file)
    profiles = asyncio.run(load_profiles(settings))
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        use_changelog_topics=False,
        # The worker's group timing: the embedded broker holds a first join for half of it.
        consumer_extra_config={
            "session.timeout.ms": int(settings.session_timeout * 1000),
            "heartbeat.interval.ms": int(min(3.0, settings.session_timeout / 3) * 1000),
        },
        loglevel=os.environ.get("CCI_LOG_LEVEL", "WARNING"),
    )
    build(app, settings, profiles, args.output_topic, status)
    status.write("ready", profiles=len(profiles), rss_bytes=rss_bytes())
    app.run()


if __name__ == "__main__":
    main()
