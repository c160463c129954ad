"""Which stream partitions have stopped moving and are read again (streams/worker/positions.py,
rule 3): the rule alone. The real worker with a lost fetch: tests/integration/
test_stuck_partition.py."""

from __future__ import annotations

from streams.worker.positions import StuckCommits

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
