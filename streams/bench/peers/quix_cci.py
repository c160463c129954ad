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

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.state.memory import MemoryStore

from streams import domain
from streams.bench.peers.profile_book import load_profiles
from streams.bench.peers.rules import ACTIVE, TICKET, MonthCounts, ticket_change, user_month_change
from streams.bench.peers.status import Clock, StatusFile, peer_parser, rss_bytes
from streams.pipeline.enrich import Enricher, Profile
from streams.pipeline.validate import InvalidEvent, parse_activity, parse_ticket
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS, Settings, load_settings


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
    parser = peer_parser(__doc__)
    parser.add_argument("--group", default="cci-bench-quix")
    parser.add_argument("--state-dir", type=Path, required=True)
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
