"""Which stream partitions have stopped moving and are read again, and a hole holding the commit
back (streams/worker/positions.py, rule 3): the rules alone, the hold on Faust's own
``_new_offset``. The real worker with a lost fetch: tests/integration/test_stuck_partition.py."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from intervaltree import IntervalTree

from streams.worker.positions import (
    SeekLedger,
    StuckCommits,
    _HoldsTheCommitAtAHole,
    deleted_before_read,
)

FACTS = ("cci-facts", 3)
OTHER = ("cci-facts", 0)
AFTER = 30.0


def test_a_partition_idle_behind_its_end_is_read_again_from_its_commit_after_the_delay() -> None:
    rule = StuckCommits(AFTER)
    # The failing CI run: committed 26, handed on 26, end 27, nothing being processed.
    assert rule.check({FACTS: (26, 26, 27, False)}, now=0.0) == {}
    assert rule.check({FACTS: (26, 26, 27, False)}, now=AFTER - 1) == {}
    assert rule.check({FACTS: (26, 26, 27, False)}, now=AFTER) == {FACTS: 26}
    # Once read again, not again before another delay.
    assert rule.check({FACTS: (26, 26, 27, False)}, now=AFTER + 5) == {}
    assert rule.check({FACTS: (26, 26, 27, False)}, now=2 * AFTER) == {FACTS: 26}


def test_a_partition_at_its_end_is_never_read_again() -> None:
    rule = StuckCommits(AFTER)
    for now in (0.0, AFTER, 3 * AFTER):
        assert rule.check({FACTS: (27, 26, 27, False), OTHER: (None, None, 0, False)}, now) == {}
    # An end not known yet (no fetch answered) is not "behind".
    assert rule.check({FACTS: (5, None, None, False)}, 10 * AFTER) == {}


def test_any_progress_or_a_record_being_processed_restarts_the_delay() -> None:
    rule = StuckCommits(AFTER)
    rule.check({FACTS: (20, 20, 27, False)}, now=0.0)
    # Records handed on (the commit follows later): progress.
    assert rule.check({FACTS: (20, 24, 27, False)}, now=AFTER) == {}
    # The commit moved: progress.
    assert rule.check({FACTS: (25, 24, 27, False)}, now=2 * AFTER) == {}
    # A record of the partition being processed, however long: not stuck.
    assert rule.check({FACTS: (25, 24, 27, True)}, now=3 * AFTER) == {}
    assert rule.check({FACTS: (25, 24, 27, False)}, now=3 * AFTER + 1) == {}
    assert rule.check({FACTS: (25, 24, 27, False)}, now=4 * AFTER + 1) == {FACTS: 25}


def test_a_partition_with_nothing_committed_is_read_again_from_its_beginning() -> None:
    rule = StuckCommits(AFTER)
    rule.check({FACTS: (None, None, 4, False)}, now=0.0)
    assert rule.check({FACTS: (None, None, 4, False)}, now=AFTER) == {FACTS: None}


def test_a_partition_that_moved_away_and_back_starts_over() -> None:
    rule = StuckCommits(AFTER)
    rule.check({FACTS: (26, 26, 27, False)}, now=0.0)
    rule.check({OTHER: (3, 3, 3, False)}, now=AFTER / 2)  # FACTS revoked
    assert rule.check({FACTS: (26, 26, 27, False)}, now=AFTER) == {}
    rule.forget()  # a rebalance
    assert rule.check({FACTS: (26, 26, 27, False)}, now=2 * AFTER) == {}
    assert rule.check({FACTS: (26, 26, 27, False)}, now=3 * AFTER) == {FACTS: 26}


def test_records_deleted_by_retention_are_passed_over_and_the_others_read_again() -> None:
    stuck = {FACTS: 26, OTHER: None, ("cci-partials", 1): 40}
    beginnings = {FACTS: 100, OTHER: 0, ("cci-partials", 1): 40}
    assert deleted_before_read(stuck, beginnings) == {FACTS: 100}


class FaustBookkeeping:
    """Faust's consumer bookkeeping for ``_new_offset`` (its real method, below), and the seek
    ledger rule 1 fills."""

    _new_offset = FaustConsumer._new_offset

    def __init__(self, committed: int | None, sought: int) -> None:
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)
        self._acked: defaultdict[Any, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set)
        self._committed_offset: dict[Any, int | None] = {FACTS: committed}
        self._thread = SimpleNamespace(seek_ledger=SeekLedger())
        self._thread.seek_ledger.record({FACTS: sought})

    def ack(self, *offsets: int) -> None:
        self._acked[FACTS].extend(offsets)
        self._acked_index[FACTS].update(offsets)


class Holding(_HoldsTheCommitAtAHole, FaustBookkeeping):
    pass


@pytest.mark.parametrize(
    ("committed", "acked", "faust", "held"),
    [
        (26, [27, 28], 29, None),  # one record missing at the commit: Faust committed over it
        (None, [3, 4], 5, None),  # records missing before a first commit (sought to 0)
        (26, [26, 27], 28, 28),  # no hole: the same commit
        (None, [0, 1], 2, 2),
    ],
)
def test_a_hole_at_the_commit_holds_it_back(
    committed: int | None, acked: list[int], faust: int | None, held: int | None
) -> None:
    plain, holding = FaustBookkeeping(committed, sought=0), Holding(committed, sought=0)
    plain.ack(*acked)
    holding.ack(*acked)
    assert plain._new_offset(FACTS) == faust
    assert holding._new_offset(FACTS) == held


def test_retention_passed_over_lets_the_held_commit_move() -> None:
    holding = Holding(26, sought=26)
    holding.ack(100, 101)  # aiokafka reset to the log start after the seek to 26
    assert holding._new_offset(FACTS) is None
    holding._committed_offset[FACTS] = 100  # what the watch does for deleted records
    assert holding._new_offset(FACTS) == 102
