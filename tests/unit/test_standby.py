"""Standby copies of the dedup state (CCI_STANDBY_REPLICAS): kept apart from the owned states
everything publishes from, kept on promotion so recovery reads only the changelog's tail."""

from __future__ import annotations

from streams.pipeline.deduplicate import PartitionState
from streams.settings import load_settings
from streams.worker.tables import Runtime


def _chunk(state: PartitionState, user: str, seq: int) -> None:
    state.apply_chunk(
        f"2026-11@{seq}", {"seq": seq, "a": [[user, 1, ["pro", "x", "eu"]]], "t": []}, 0
    )


def _runtime(owned: set[int], standby: set[int]) -> Runtime:
    runtime = Runtime(load_settings({}))
    runtime.assign_roles(owned, standby, fresh=owned | standby)
    return runtime


def test_a_standby_partitions_records_never_reach_the_owned_states() -> None:
    runtime = _runtime(owned={0, 1}, standby={2})

    _chunk(runtime.held_state(2), "u-standby", 5)
    _chunk(runtime.held_state(0), "u-owned", 7)

    assert set(runtime.states) == {0}
    assert set(runtime.standbys) == {2}
    assert runtime.standbys[2].user_months() == 1


def test_a_promoted_standby_keeps_its_state_and_the_offset_recovery_resumes_after() -> None:
    runtime = _runtime(owned={0}, standby={2})
    _chunk(runtime.held_state(2), "u1", 5)
    runtime.changelog_offsets[2] = 41
    copy = runtime.standbys[2]

    promoted = runtime.assign_roles(owned={0, 2}, standby=set(), fresh=set())

    assert promoted == [2]
    assert runtime.states[2] is copy and not runtime.standbys
    assert runtime.standby_partitions == set()
    assert runtime.changelog_offset(2) == 41
    # From now on its records fold into the owned state.
    _chunk(runtime.held_state(2), "u2", 6)
    assert runtime.states[2].user_months() == 2


def test_a_demoted_partition_stays_as_the_standby() -> None:
    runtime = _runtime(owned={0, 1}, standby=set())
    _chunk(runtime.held_state(0), "u0", 2)
    _chunk(runtime.held_state(1), "u1", 3)
    runtime.changelog_offsets[1] = 9

    promoted = runtime.assign_roles(owned={0}, standby={1}, fresh=set())

    assert promoted == []
    assert set(runtime.states) == {0} and set(runtime.standbys) == {1}
    assert runtime.changelog_offset(1) == 9


def test_a_partition_in_no_role_or_fresh_is_dropped_and_read_from_the_start() -> None:
    runtime = _runtime(owned={0, 1}, standby={2, 3})
    for partition in (0, 1, 2, 3):
        _chunk(runtime.held_state(partition), "u", 1)
        runtime.changelog_offsets[partition] = 10

    # 1 and 3 went to other workers; 0 was lost and assigned again (fresh).
    runtime.assign_roles(owned={0}, standby={2}, fresh={0})

    assert set(runtime.states) == set() and set(runtime.standbys) == {2}
    assert [runtime.changelog_offset(p) for p in (0, 1, 2, 3)] == [None, None, 10, None]
