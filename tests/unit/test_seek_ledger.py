"""Nothing fetched before a seek survives it (streams/worker/positions.py, rule 2).

The failing two-worker run this replays (docs/embedded-broker.md): ``cci-facts/1`` committed at
95, a record at 195 handed on before the seek raised Faust's read offset to 195, and the records
95–194 fetched after the seek were dropped as already read. Faust's rule for a fetched record is
``offset >= read_offset`` (``Consumer._drain_messages``); ``passes`` below is that rule.
"""

from __future__ import annotations

from aiokafka import TopicPartition

from streams.worker.positions import SeekLedger, StampedRecords, drop_records_fetched_before_a_seek

FACTS = TopicPartition("cci-facts", 1)
OTHER = TopicPartition("cci-facts", 0)
CHANGELOG = TopicPartition("cci-user-months-changelog", 1)


def passes(offset: int, read_offset: int | None) -> bool:
    return read_offset is None or offset >= read_offset


def test_a_fetch_made_before_a_seek_loses_only_the_partitions_the_seek_moved() -> None:
    ledger = SeekLedger()
    before = StampedRecords({FACTS: [195], OTHER: [7], CHANGELOG: [3]}, ledger.epoch)
    ledger.record({FACTS: 95})
    after = StampedRecords({FACTS: [95, 96]}, ledger.epoch)

    assert drop_records_fetched_before_a_seek(before, ledger) == {OTHER: [7], CHANGELOG: [3]}
    assert drop_records_fetched_before_a_seek(after, ledger) == {FACTS: [95, 96]}


def test_records_without_a_stamp_are_left_alone() -> None:
    ledger = SeekLedger()
    ledger.record({FACTS: 95})
    assert drop_records_fetched_before_a_seek({FACTS: [195]}, ledger) == {FACTS: [195]}


def test_each_seek_is_applied_once_and_a_later_seek_again() -> None:
    ledger = SeekLedger()
    ledger.record({FACTS: 95, OTHER: 0})
    assert sorted(ledger.unapplied(), key=lambda seek: seek[0].partition) == [
        (OTHER, 0),
        (FACTS, 95),
    ]
    assert ledger.unapplied() == []
    ledger.record({FACTS: 120})
    assert ledger.unapplied() == [(FACTS, 120)]


def test_the_failing_run_replayed_every_record_from_the_commit_is_handed_on() -> None:
    ledger = SeekLedger()
    # Before the seek: 195 reached an agent and became Faust's read offset.
    read_offset: int | None = 195
    in_flight = StampedRecords({FACTS: list(range(196, 200))}, ledger.epoch)
    # The consumer thread seeks to the commit; the fetcher's task applies it before the next
    # fetch's records go on, and the fetch in flight from before the seek is dropped.
    ledger.record({FACTS: 95})
    for _tp, offset in ledger.unapplied():
        read_offset = offset
    assert drop_records_fetched_before_a_seek(in_flight, ledger) == {}
    refetched = StampedRecords({FACTS: list(range(95, 200))}, ledger.epoch)
    handed_on = []
    for offset in drop_records_fetched_before_a_seek(refetched, ledger)[FACTS]:
        if passes(offset, read_offset):
            handed_on.append(offset)
            read_offset = offset
    assert handed_on == list(range(95, 200))
