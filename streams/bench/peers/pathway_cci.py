"""The CCI job written with Pathway 0.33: a peer ``cci bench`` measures the pipeline against.

    user-activity, ticket-created ─ parse + enrich (UDF) ─ groupby(user-month | ticket)
        .reduce(min version) ─ flatten into segments ─ groupby(month, dimension, segment)
        .reduce(sum) ─ groupby(month).reduce(tuple) ─ OUTPUT_TOPIC

Pathway is declarative and incremental: the job says what the figures are (the earliest version
of each user-month and ticket, counted per segment) and the engine keeps them up to date. It runs
in a virtual environment of its own (``environments.py``; Pathway's licence is the Business
Source License, never a dependency of the product) as a process of its own, one engine thread,
and computes exactly what the pipeline computes:

* Parsing and enrichment are the pipeline's own (``streams.pipeline.validate``,
  ``streams.pipeline.enrich``), in one UDF per input. Profiles are read completely first with
  the worker's own loader (``ProfileBook``), as the Quix peer reads them.
* The winning version (earliest event time, ties by the smaller attribute tuple: the pipeline's
  rule) is ``pw.reducers.min`` over a string that sorts as (time, attributes) do: the time
  zero-padded, then the attributes joined by NUL (``rules.version_order``; it relies on no
  attribute holding a NUL, as none of the generated data does).
* A channel's active users are its month's (the batch recount's rule), so the figures of a month
  are gathered into one row and finished there; each row is published whole
  (``"complete": true``) as ``{"month", "figures": [[dimension, segment, tickets, users], …]}``.
  Pathway's JSON output adds ``"diff"`` (1 for the new row, -1 for the one it replaces) and
  ``"time"``; ``cci bench`` skips the retractions.

Things learnt running it: the Kafka reader keys rows by the message key unless
``autogenerate_key=True`` (rows with the same key, here every event of a user, silently
overwrite each other); it publishes nothing until it has processed the backlog it found, so its
first output comes late. Choices that favour the peer, as for the other peers
(docs/performance.md): no persistence (state in memory only), deterministic UDFs (results not
kept for retractions), invalid events dropped rather than dead-lettered.

Status lines go to ``--status-file`` as for every peer: ``ready`` once the profiles are loaded,
``first_message`` when the first input reaches the parsing UDF.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pathway as pw

from streams import domain
from streams.bench.peers.profile_book import load_profiles
from streams.bench.peers.rules import month_figures, parse_order, version_order
from streams.bench.peers.status import Clock, StatusFile, peer_parser, rss_bytes
from streams.pipeline.enrich import Enricher, Profile
from streams.pipeline.validate import InvalidEvent, parse_activity, parse_ticket
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS, Settings, load_settings

ACTIVE, TICKET = "a", "t"
COMMIT_MS = 100  # how often the readers hand what they read to the engine (Pathway's default 1500)


def build(
    settings: Settings, profiles: dict[str, Profile], output: str, status: StatusFile
) -> None:
    """The whole job: readers → earliest version per key → counts per segment → output."""
    user_dimensions = domain.user_dimensions(settings.extra_dimensions)
    all_versions = read_versions(settings, profiles, status)
    winners = earliest_versions(all_versions)
    months = month_counts(winners, user_dimensions, (*user_dimensions, domain.CHANNEL))
    publish(months, settings, output)


def read_versions(settings: Settings, profiles: dict[str, Profile], status: StatusFile) -> pw.Table:
    """Both input topics, parsed and enriched: one (key, order) row per valid event."""
    enricher = Enricher.from_settings(settings, profiles.get)
    max_bytes = settings.max_event_bytes
    clock = Clock()
    rdkafka = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": "cci-bench-pathway",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "false",
        "session.timeout.ms": str(int(settings.session_timeout * 1000)),
    }

    @pw.udf(deterministic=True)
    def activity_version(data: bytes) -> tuple[str, str] | None:
        status.first_message()
        try:
            fact = enricher.active_fact(parse_activity(data, max_bytes), clock())
        except InvalidEvent:
            return None
        if fact is None:
            return None
        month = domain.month_label(fact.month)
        key = f"{ACTIVE}|{fact.user_id}|{month}"
        return key, version_order(fact.ts, month, fact.attributes)

    @pw.udf(deterministic=True)
    def ticket_version(data: bytes) -> tuple[str, str] | None:
        status.first_message()
        try:
            fact = enricher.ticket_fact(parse_ticket(data, max_bytes), clock())
        except InvalidEvent:
            return None
        month = domain.month_label(fact.month)
        return f"{TICKET}|{fact.ticket_id}", version_order(fact.ts, month, fact.attributes)

    def versions(topic: str, parse: Any) -> pw.Table:
        records = pw.io.kafka.read(
            rdkafka,
            topic=topic,
            format="raw",
            autogenerate_key=True,  # else rows keyed by the message key (the user) overwrite
            autocommit_duration_ms=COMMIT_MS,
            name=topic,
        )
        parsed = records.select(version=parse(pw.this.data))
        return parsed.filter(pw.this.version.is_not_none()).select(
            key=pw.unwrap(pw.this.version)[0], order=pw.unwrap(pw.this.version)[1]
        )

    return versions(TOPIC_ACTIVITY, activity_version).concat_reindex(
        versions(TOPIC_TICKETS, ticket_version)
    )


def earliest_versions(all_versions: pw.Table) -> pw.Table:
    """The dedup: the winning (earliest) version of each user-month and ticket."""
    return all_versions.groupby(pw.this.key).reduce(
        pw.this.key, order=pw.reducers.min(pw.this.order)
    )


def month_counts(
    winners: pw.Table,
    user_dimensions: tuple[str, ...],
    ticket_dimensions: tuple[str, ...],
) -> pw.Table:
    """Tickets and users per (month, dimension, segment), gathered into one row per month."""

    @pw.udf(deterministic=True)
    def segments(key: str, order: str) -> list[tuple[str, str, str, int, int]]:
        """(month, dimension, segment, tickets, users) the winning version counts under."""
        month, attributes = parse_order(order)
        if key.startswith(TICKET):
            return [
                (month, d, s, 1, 0) for d, s in domain.segment_keys(ticket_dimensions, attributes)
            ]
        return [(month, d, s, 0, 1) for d, s in domain.segment_keys(user_dimensions, attributes)]

    counted = (
        winners.select(segment=segments(pw.this.key, pw.this.order))
        .flatten(pw.this.segment)
        .select(
            month=pw.this.segment[0],
            dimension=pw.this.segment[1],
            segment=pw.this.segment[2],
            tickets=pw.this.segment[3],
            users=pw.this.segment[4],
        )
    )
    counts = counted.groupby(pw.this.month, pw.this.dimension, pw.this.segment).reduce(
        pw.this.month,
        pw.this.dimension,
        pw.this.segment,
        tickets=pw.reducers.sum(pw.this.tickets),
        users=pw.reducers.sum(pw.this.users),
    )
    return counts.groupby(pw.this.month).reduce(
        pw.this.month,
        rows=pw.reducers.tuple(
            pw.make_tuple(pw.this.dimension, pw.this.segment, pw.this.tickets, pw.this.users)
        ),
    )


def publish(months: pw.Table, settings: Settings, output: str) -> None:
    """Each month's figures, whole, as JSON on the output topic."""

    @pw.udf(deterministic=True)
    def month_document(rows: tuple[tuple[str, str, int, int], ...]) -> pw.Json:
        return pw.Json(month_figures(rows))

    published = months.select(pw.this.month, figures=month_document(pw.this.rows), complete=True)
    pw.io.kafka.write(
        published,
        {"bootstrap.servers": settings.kafka_bootstrap},
        output,
        format="json",
        name="figures",
    )


def main(argv: list[str] | None = None) -> None:
    parser = peer_parser(__doc__)
    parser.add_argument("--state-dir", type=Path, help="unused: the peer keeps no state on disk")
    args = parser.parse_args(argv)
    # Broker, time zone, retention, dimensions: the same CCI_* settings as the worker.
    settings = load_settings()
    status = StatusFile(args.status_file)
    profiles = asyncio.run(load_profiles(settings))
    build(settings, profiles, args.output_topic, status)
    status.write("ready", profiles=len(profiles), rss_bytes=rss_bytes())
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main()
