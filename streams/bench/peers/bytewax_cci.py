"""The CCI job written with Bytewax 0.21: a peer ``cci bench`` measures the pipeline against.

    user-activity, ticket-created ─ parse + enrich ─ key_on(user-month | ticket)
        ─ stateful_map: dedup (the winning version) ─ flat_map: deltas per month
        ─ key_on(month) ─ stateful_map: count per segment ─ OUTPUT_TOPIC

It runs in a virtual environment of its own (``environments.py``) as a process of its own, one
Bytewax worker (``cli_main``, what ``python -m bytewax.run`` calls), and computes exactly what the
pipeline computes:

* Parsing and enrichment are the pipeline's own (``streams.pipeline.validate``,
  ``streams.pipeline.enrich``); profiles are read completely first, by a bounded dataflow over
  the profile topic (``tail=False``), as the worker reads them before processing (and, unlike
  the worker, not followed afterwards).
* Deduplication (``streams/bench/peers/rules.py``, shared with the other peers) is keyed by the
  user-month and by the ticket id, so unlike the Quix peer it does not rely on how the inputs are
  keyed. Its deltas are re-keyed by month and counted per (dimension, segment); each count step
  publishes the absolute figures it changed, keyed by month, as
  ``{"month", "figures": [[dimension, segment, tickets, active_users], …]}``.

Choices that favour the peer, as for the Quix peer (docs/performance.md): no recovery
(``recovery_config`` unset: state lives in memory only), counts as deltas (exact unless a crash
replays them), invalid events dropped rather than dead-lettered. Bytewax's Kafka source assigns
itself every partition (no consumer group, no group join to wait for).

Output records are stamped by the producer when sent. Status lines go to ``--status-file`` as
for every peer: ``ready`` once the profiles are loaded, ``first_message`` at the first input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bytewax.connectors.kafka.operators as kop
import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main
from bytewax.testing import TestingSink, run_main

from streams import domain
from streams.bench.peers.rules import (
    ACTIVE,
    TICKET,
    Delta,
    MonthCounts,
    fold_profile,
    ticket_change,
    user_month_change,
)
from streams.bench.peers.status import Clock, StatusFile, peer_parser, rss_bytes
from streams.pipeline.enrich import ActiveFact, Enricher, Profile, TicketFact
from streams.pipeline.validate import InvalidEvent, parse_activity, parse_ticket
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, Settings, load_settings

BATCH_SIZE = 10_000  # records a source partition hands on at most per poll (Bytewax's default 1000)
MonthDeltas = tuple[str, str, list[Delta]]  # (month label, ACTIVE | TICKET, deltas)


def brokers_of(settings: Settings) -> list[str]:
    return settings.kafka_bootstrap.split(",")


def load_profiles(settings: Settings) -> dict[str, Profile]:
    """The profile topic up to its end, by a dataflow that stops there."""
    flow = Dataflow("cci-profiles")
    records = kop.input(
        "profiles", flow, brokers=brokers_of(settings), topics=[TOPIC_PROFILES], tail=False
    )
    collected: list[KafkaSourceMessage[bytes | None, bytes | None]] = []
    op.output("collect", records.oks, TestingSink(collected))
    run_main(flow)
    profiles: dict[str, Profile] = {}
    # Offsets order a user's versions within its partition; newer_profile decides across them.
    for record in collected:
        fold_profile(profiles, record.key, record.value, settings)
    return profiles


def build(
    settings: Settings, profiles: dict[str, Profile], output: str, status: StatusFile
) -> Dataflow:
    enricher = Enricher.from_settings(settings, profiles.get)
    user_dimensions = domain.user_dimensions(settings.extra_dimensions)
    max_bytes = settings.max_event_bytes
    clock = Clock()

    def to_fact(
        record: KafkaSourceMessage[bytes | None, bytes | None],
    ) -> ActiveFact | TicketFact | None:
        status.first_message()
        if record.value is None:
            return None
        try:
            if record.topic == TOPIC_TICKETS:
                return enricher.ticket_fact(parse_ticket(record.value, max_bytes), clock())
            return enricher.active_fact(parse_activity(record.value, max_bytes), clock())
        except InvalidEvent:
            return None

    def dedup_key(fact: ActiveFact | TicketFact) -> str:
        if isinstance(fact, TicketFact):
            return f"t|{fact.ticket_id}"
        return f"a|{fact.user_id}|{fact.month}"

    def dedup(
        held: list[Any] | None, fact: ActiveFact | TicketFact
    ) -> tuple[list[Any] | None, list[MonthDeltas]]:
        label = domain.month_label(fact.month)
        if isinstance(fact, TicketFact):
            winner, changes = ticket_change(held, fact.ts, fact.attributes, label)
            return winner or held, [(month, TICKET, deltas) for month, deltas in changes]
        winner, deltas = user_month_change(held, fact.ts, fact.attributes)
        return winner or held, [(label, ACTIVE, deltas)] if deltas else []

    def count(
        counters: dict[str, Any] | None, change: MonthDeltas
    ) -> tuple[dict[str, Any], list[list[Any]]]:
        counters = counters if counters is not None else {}
        month = MonthCounts(counters.get, counters.__setitem__, user_dimensions)
        return counters, month.apply(change[1], change[2])

    def to_record(keyed: tuple[str, list[list[Any]]]) -> KafkaSinkMessage[bytes, bytes]:
        month, figures = keyed
        value = orjson.dumps({"month": month, "figures": figures})
        return KafkaSinkMessage(key=month.encode(), value=value)  # timestamp 0: stamped when sent

    flow = Dataflow("cci")
    inputs = kop.input(
        "inputs",
        flow,
        brokers=brokers_of(settings),
        topics=[TOPIC_ACTIVITY, TOPIC_TICKETS],
        batch_size=BATCH_SIZE,
    )
    op.inspect("errors", inputs.errs, _raise_error)
    facts = op.filter_map("parse-enrich", inputs.oks, to_fact)
    winners = op.stateful_map("dedup", op.key_on("by-fact", facts, dedup_key), dedup)
    changes = op.flat_map("deltas", winners, lambda keyed: keyed[1])
    counts = op.stateful_map(
        "count", op.key_on("by-month", changes, lambda change: change[0]), count
    )
    records = op.map("serialize", counts, to_record)
    kop.output("output", records, brokers=brokers_of(settings), topic=output)
    return flow


def _raise_error(step_id: str, error: Any) -> None:
    raise RuntimeError(f"{step_id}: {error.err}")


def main(argv: list[str] | None = None) -> None:
    parser = peer_parser(__doc__)
    parser.add_argument("--state-dir", type=Path, help="unused: the peer keeps no state on disk")
    args = parser.parse_args(argv)
    # Broker, time zone, retention, dimensions: the same CCI_* settings as the worker.
    settings = load_settings()
    status = StatusFile(args.status_file)
    profiles = load_profiles(settings)
    flow = build(settings, profiles, args.output_topic, status)
    status.write("ready", profiles=len(profiles), rss_bytes=rss_bytes())
    cli_main(flow, workers_per_process=1)


if __name__ == "__main__":
    main()
