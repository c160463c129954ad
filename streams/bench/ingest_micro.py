"""Micro-benchmark of the ingest stage's CPU per event: parse, validate, enrich, group, encode.

    .venv/bin/python -m streams.bench.ingest_micro                # 20,000 users, best of 5
    .venv/bin/python -m streams.bench.ingest_micro --users 5000 --repeat 3

Generated traffic (``streams.dev.generate``: its mix of activity and tickets, resends, late
records, time zones), in its delivery order, goes through ``ingest_records`` in batches of
``INGEST_BATCH`` records and each batch's facts through ``encode_facts`` (split to fit), as the
ingest process does, with the profile table loaded from the same data. No broker, no metrics:
only the per-event CPU the ingest process spends on its own. Prints µs per event (process CPU
time, best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from streams.dev.generate import generate
from streams.pipeline.enrich import (
    Enricher,
    Profile,
    encode_facts,
    newer_profile,
    profile_from_event,
)
from streams.pipeline.records import split_to_fit
from streams.pipeline.validate import InvalidEvent, parse_profile
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS, Settings
from streams.worker.ingest import INGEST_BATCH, ingest_records


@dataclass(frozen=True)
class Record:
    """The fields of a consumed record that ingest reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def load_profiles(lines: list[bytes], zone: ZoneInfo, max_bytes: int) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for line in lines:
        try:
            event = parse_profile(line, max_bytes)
        except InvalidEvent:
            continue
        profiles[event.user_id] = newer_profile(
            profiles.get(event.user_id), profile_from_event(event, zone)
        )
    return profiles


def run_once(
    batches: list[list[Record]], settings: Settings, profiles: dict[str, Profile], now: datetime
) -> tuple[float, int, int]:
    """(CPU seconds, facts, facts bytes) of one pass over every batch with a fresh enricher."""
    enricher = Enricher.from_settings(settings, profiles.get)
    facts = size = 0
    started = time.process_time()
    for records in batches:
        batch = ingest_records(
            records,
            enricher,
            settings.max_event_bytes,
            settings.partitions,
            now,
            settings.max_segment_chars,
        )
        for partition_facts in batch.facts.values():
            facts += len(partition_facts)
            for value in split_to_fit(partition_facts, encode_facts):
                size += len(value)
    return time.process_time() - started, facts, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.ingest_micro")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    settings = Settings()
    now = datetime.now(UTC)
    data = generate(args.users, args.months, args.seed, now, settings.zone)
    profiles = load_profiles(data.profiles, settings.zone, settings.max_event_bytes)
    # In the generator's delivery order, the two topics interleaved evenly, as a consumer of
    # both would get them.
    inputs = [
        (n / len(data.activity), TOPIC_ACTIVITY, value) for n, value in enumerate(data.activity)
    ]
    inputs += [
        (n / len(data.tickets), TOPIC_TICKETS, value) for n, value in enumerate(data.tickets)
    ]
    inputs.sort(key=lambda item: item[0])
    records = [
        Record(topic, 0, offset, None, value) for offset, (_, topic, value) in enumerate(inputs)
    ]
    batches = [records[i : i + INGEST_BATCH] for i in range(0, len(records), INGEST_BATCH)]
    best = None
    for _ in range(args.repeat):
        seconds, facts, size = run_once(batches, settings, profiles, now)
        best = seconds if best is None else min(best, seconds)
    assert best is not None
    print(
        f"{len(records):,} events ({len(data.activity):,} activity, {len(data.tickets):,} tickets),"
        f" {facts:,} facts, {size:,} bytes of facts records: "
        f"{best / len(records) * 1e6:.2f} µs per event (best of {args.repeat})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
