"""merge_partial / segment_totals: the newest partial of each partition, summed over partitions."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping

from streams.pipeline.aggregate import (
    MonthPartials,
    all_segment_keys,
    merge_partial,
    segment_totals,
)


def merged(
    state: MonthPartials | None, partition: int, seq: int, counts: Mapping[str, list[int]]
) -> MonthPartials:
    result = merge_partial(state, partition, seq, counts)
    assert result is not None, f"partial of partition {partition} at seq {seq} was refused"
    return result[0]


def totals(state: MonthPartials) -> dict[str, tuple[int, int]]:
    return segment_totals(state, all_segment_keys(state))


def test_totals_are_sums_over_partitions() -> None:
    state = merged(None, 0, 10, {"all|all": [3, 9], "plan|free": [2, 5]})
    state = merged(state, 1, 4, {"all|all": [1, 4], "plan|free": [1, 4]})
    state = merged(state, 2, 7, {"all|all": [5, 2], "plan|paid": [5, 2]})

    assert totals(state) == {"all|all": (9, 15), "plan|free": (3, 9), "plan|paid": (5, 2)}


def test_a_resent_partial_overwrites_rather_than_adds() -> None:
    once = merged(None, 0, 10, {"all|all": [3, 9]})
    twice = merged(once, 0, 10, {"all|all": [3, 9]})
    newer = merged(twice, 0, 11, {"all|all": [4, 9]})

    assert totals(twice) == {"all|all": (3, 9)}
    assert totals(newer) == {"all|all": (4, 9)}


def test_an_older_partial_of_the_same_partition_is_ignored() -> None:
    state = merged(None, 0, 10, {"all|all": [3, 9]})
    before = copy.deepcopy(state)

    assert merge_partial(state, 0, 9, {"all|all": [100, 100]}) is None
    assert state == before


def test_an_equal_seq_is_accepted() -> None:
    # After recovery a worker republishes the same seq with absolute figures: they must land.
    state = merged(None, 0, 10, {"all|all": [3, 9]})

    result = merge_partial(state, 0, 10, {"all|all": [3, 8]})

    assert result is not None
    assert totals(result[0]) == {"all|all": (3, 8)}
    assert result[1] == {"all|all"}


def test_seq_is_compared_per_partition() -> None:
    state = merged(None, 0, 100, {"all|all": [1, 1]})

    state = merged(state, 1, 5, {"all|all": [2, 2]})

    assert totals(state) == {"all|all": (3, 3)}


def test_merging_leaves_the_given_state_untouched() -> None:
    # The table's current value must not change unless the caller stores the merged one.
    state = merged(None, 0, 10, {"all|all": [3, 9], "plan|free": [3, 9]})
    before = copy.deepcopy(state)

    merged(state, 0, 11, {"plan|free": [0, 0]})
    merged(state, 1, 1, {"plan|paid": [1, 1]})

    assert state == before


def test_channel_totals_use_the_global_active_users() -> None:
    state = merged(None, 0, 1, {"all|all": [4, 10], "channel|email": [3, 0], "channel|web": [1, 0]})
    state = merged(state, 1, 1, {"all|all": [2, 6], "channel|web": [2, 0]})

    assert segment_totals(state, ["channel|email", "channel|web", "all|all"]) == {
        "channel|email": (3, 16),
        "channel|web": (3, 16),
        "all|all": (6, 16),
    }


def test_a_new_global_count_touches_every_channel_of_every_partition() -> None:
    state = merged(None, 0, 1, {"all|all": [4, 10], "channel|email": [4, 0], "plan|free": [4, 10]})
    state = merged(state, 1, 1, {"all|all": [1, 1], "channel|web": [1, 0]})

    result = merge_partial(state, 1, 2, {"all|all": [1, 3]})

    assert result is not None
    new_state, touched = result
    assert touched == {"all|all", "channel|email", "channel|web"}
    assert segment_totals(new_state, ["channel|email"]) == {"channel|email": (4, 13)}


def test_a_partial_without_the_global_count_touches_only_its_keys() -> None:
    state = merged(None, 0, 1, {"all|all": [4, 10], "channel|email": [4, 0]})

    result = merge_partial(state, 0, 2, {"plan|free": [1, 1], "channel|chat": [1, 0]})

    assert result is not None
    assert result[1] == {"plan|free", "channel|chat"}


def test_a_later_partial_with_some_keys_keeps_the_partitions_other_keys() -> None:
    state = merged(None, 0, 1, {"all|all": [4, 10], "plan|free": [3, 7], "plan|paid": [1, 3]})

    state = merged(state, 0, 2, {"plan|free": [2, 7]})

    assert totals(state) == {"all|all": (4, 10), "plan|free": (2, 7), "plan|paid": (1, 3)}
    assert state["0"]["seq"] == 2


def test_a_reset_partial_replaces_the_partitions_keys_and_touches_the_dropped_ones() -> None:
    # After a recovery the partition's owner republishes everything it has: keys it no longer
    # has (a value the cardinality guard now counts as other) must not linger.
    state = merged(None, 0, 1, {"all|all": [4, 10], "region|eu": [3, 7], "region|us": [1, 3]})
    state = merged(state, 1, 1, {"all|all": [1, 1], "region|us": [1, 1]})

    result = merge_partial(state, 0, 2, {"all|all": [4, 10], "region|other": [4, 10]}, reset=True)

    assert result is not None
    state, touched = result
    assert {"region|eu", "region|us", "region|other"} <= touched
    assert totals(state) == {
        "all|all": (5, 11),
        "region|other": (4, 10),
        "region|us": (1, 1),
    }


def test_a_segment_no_partition_has_totals_zero() -> None:
    state = merged(None, 0, 1, {"all|all": [4, 10]})

    assert segment_totals(state, ["plan|vip"]) == {"plan|vip": (0, 0)}
    assert segment_totals(state, ["channel|fax"]) == {"channel|fax": (0, 10)}


def test_the_state_survives_a_json_round_trip() -> None:
    # The month state is the changelog value: after recovery its counts are JSON lists again.
    state = merged(None, 0, 3, {"all|all": [4, 10], "channel|email": [4, 0]})
    state = json.loads(json.dumps(state))

    state = merged(state, 1, 1, {"all|all": [1, 2]})

    assert totals(state) == {"all|all": (5, 12), "channel|email": (4, 12)}
