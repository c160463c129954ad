"""The ingest stage's pure part: a batch of input records → facts per partition + dead letters."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streams import domain
from streams.dev.broker import free_port
from streams.pipeline import records
from streams.pipeline.enrich import Enricher, Profile, decode_facts_record, encode_facts
from streams.pipeline.partitioning import partition_for
from streams.pipeline.validate import TOO_LATE, InvalidEvent
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS, load_settings
from streams.worker.ingest import (
    IngestRunner,
    dead_letter_key,
    dead_letter_value,
    ingest_records,
)
from streams.worker.ingest_process import IngestProcess, IngestProcesses, Report

NOW = datetime(2026, 3, 15, tzinfo=UTC)
SETTINGS = load_settings({"CCI_ACTIVE_ACTIVITIES": "login"})


@dataclass
class Record:
    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def enricher(profiles: dict[str, Profile] | None = None) -> Enricher:
    return Enricher.from_settings(SETTINGS, (profiles or {}).get)


def activity(user: str, when: str = "2026-03-02T10:00:00Z", kind: str = "login") -> bytes:
    return orjson.dumps({"user_id": user, "occurred_at": when, "activity": kind})


def ticket(ticket_id: str, user: str, when: str = "2026-03-03T10:00:00Z") -> bytes:
    return orjson.dumps({"ticket_id": ticket_id, "user_id": user, "created_at": when})


def test_facts_go_to_the_partition_of_their_identity() -> None:
    records = [
        Record(TOPIC_ACTIVITY, activity("u1")),
        Record(TOPIC_ACTIVITY, activity("u2")),
        Record(TOPIC_TICKETS, ticket("t1", "u1")),
    ]
    batch = ingest_records(records, enricher(), SETTINGS.max_event_bytes, 4, NOW)
    assert batch.consumed == {TOPIC_ACTIVITY: 2, TOPIC_TICKETS: 1}
    placed = {
        fact[0]: partition
        for partition, facts in batch.facts.items()
        for fact in decode_facts_record(encode_facts(facts))
    }
    assert placed == {key: partition_for(key, 4) for key in ("u1", "u2", "t1")}
    assert batch.dead_letters == []


def test_inactive_activity_types_are_counted_not_sent() -> None:
    records = [Record(TOPIC_ACTIVITY, activity("u1", kind="page_view"))]
    batch = ingest_records(records, enricher(), SETTINGS.max_event_bytes, 4, NOW)
    assert batch.inactive == 1
    assert not batch.facts and not batch.dead_letters


def test_invalid_records_become_dead_letters_with_their_origin() -> None:
    late = activity("u1", when="2020-01-01T00:00:00Z")
    records = [
        Record(TOPIC_TICKETS, b"\xff\xfe", partition=2, offset=41, key=b"k"),
        Record(TOPIC_ACTIVITY, late, partition=1, offset=7),
        Record(TOPIC_ACTIVITY, None, partition=0, offset=3),
    ]
    batch = ingest_records(records, enricher(), SETTINGS.max_event_bytes, 4, NOW)
    assert not batch.facts
    reasons = [reason for _, _, reason in batch.dead_letters]
    assert reasons == ["invalid_utf8", TOO_LATE, "invalid_json"]
    key, value, _ = batch.dead_letters[0]
    letter = orjson.loads(value)
    assert key == b"k"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (TOPIC_TICKETS, 2, 41)
    assert base64.b64decode(letter["raw"]) == b"\xff\xfe"
    assert orjson.loads(batch.dead_letters[2][1])["raw"] == ""


def test_enrichment_uses_the_profile() -> None:
    profile = Profile(domain.month_from_label("2025-01"), {"plan": "paid"}, 0)
    batch = ingest_records(
        [Record(TOPIC_ACTIVITY, activity("u1"))],
        enricher({"u1": profile}),
        SETTINGS.max_event_bytes,
        1,
        NOW,
    )
    (fact,) = batch.facts[0]
    assert fact.attributes[0] == "paid"
    assert fact.attributes[-1] == "12m+"


def test_dead_letter_value_names_reason_and_error() -> None:
    letter = orjson.loads(
        dead_letter_value("t", 1, 2, b"x", InvalidEvent("wrong_type", "user_id must be a string"))
    )
    assert letter["reason"] == "wrong_type"
    assert "user_id must be a string" in letter["error"]


def test_a_small_dead_letter_keeps_raw_whole() -> None:
    letter = orjson.loads(dead_letter_value("t", 1, 2, b"x" * 100, InvalidEvent("oversized", "")))
    assert base64.b64decode(letter["raw"]) == b"x" * 100
    assert "raw_truncated" not in letter and "raw_bytes" not in letter


def test_a_huge_dead_letter_is_cut_to_fit_a_record_and_says_so() -> None:
    raw = b"y" * (7 * 1024 * 1024)
    error = InvalidEvent("invalid_json", "z" * 100_000)
    value = dead_letter_value("t", 1, 2, raw, error)
    assert len(value) < records.MAX_RECORD_BYTES
    letter = orjson.loads(value)
    assert letter["raw_truncated"] is True and letter["raw_bytes"] == len(raw)
    assert base64.b64decode(letter["raw"]) == raw[: records.DEAD_LETTER_RAW_BYTES]
    assert len(letter["error"]) == records.DEAD_LETTER_ERROR_CHARS


def test_a_huge_key_is_cut_in_the_dead_letter() -> None:
    assert dead_letter_key(b"k" * 5000) == b"k" * records.DEAD_LETTER_KEY_BYTES
    assert dead_letter_key(b"u1") == b"u1" and dead_letter_key(None) is None


def test_partition_for_is_stable_and_in_range() -> None:
    keys = [f"user-{n}" for n in range(1000)]
    spread = {partition_for(key, 4) for key in keys}
    assert spread == {0, 1, 2, 3}
    assert [partition_for(k, 4) for k in keys] == [partition_for(k, 4) for k in keys]
    assert partition_for("2026-03", 4) == 1  # pinned: changing it moves every internal key


def test_ingest_that_cannot_start_says_it_is_stalled_and_why() -> None:
    # Nothing listens on the port: every attempt fails, and none makes progress.
    settings = load_settings({"CCI_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})

    async def attempt() -> str:
        async def ready() -> None:
            return None

        runner = IngestRunner(
            settings, enricher(), "cci-facts", ready, backoff_initial=0.05, backoff_max=0.1
        )
        await runner.start()
        try:
            for _ in range(200):
                if runner.failures >= 2:
                    break
                await asyncio.sleep(0.05)
            return runner.stalled
        finally:
            await runner.stop()

    stalled = asyncio.run(attempt())
    assert stalled.startswith("failed ") and "without progress" in stalled, stalled
    assert "KafkaConnectionError" in stalled


def test_a_stalled_ingest_makes_the_worker_unhealthy_with_the_reason() -> None:
    process = IngestProcess(load_settings({}), "cci-facts")
    process.report = Report(running=True, profiles_loaded=True)
    assert process.healthy and process.problem == ""
    process.report = Report(True, True, {}, "failed 2 time(s) without progress; last: X: y")
    assert not process.healthy
    assert process.problem == "ingest failed 2 time(s) without progress; last: X: y"


def test_ingest_processes_are_healthy_when_each_is_and_show_every_problem() -> None:
    group = IngestProcesses(load_settings({"CCI_INGEST_PROCESSES": "3"}), "cci-facts")
    assert [p.what for p in group.processes] == [f"ingest process {n} of 3" for n in (1, 2, 3)]
    for process in group.processes:
        process.report = Report(running=True, profiles_loaded=True)
    assert group.healthy and group.problem == ""
    group.processes[1].report = Report(True, False)  # still loading its profiles
    assert not group.healthy and group.problem == ""
    group.processes[1].report = Report(True, True)
    group.processes[2].report = Report(True, True, {}, "failed 1 time(s) without progress")
    assert not group.healthy
    assert group.problem == "ingest failed 1 time(s) without progress"
