"""Stage 4 of the dataflow: partial counts of every facts partition → exact totals per segment.

Each facts partition publishes *absolute* counts for the segments that changed, stamped with the
highest facts offset behind them (``seq``). Totals are the sum over partitions of the newest
partial of each: a resent or replayed partial overwrites rather than adds, and one from an older
owner of a partition (lower ``seq``) is ignored.

State of one month, as kept in the table (JSON-friendly, so it is also the changelog value)::

    {"<partition>": {"seq": int, "counts": {"<dimension>|<segment>": [tickets, active_users]}}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams import domain

MonthPartials = dict[str, dict[str, Any]]
GLOBAL_KEY = f"{domain.ALL}|{domain.ALL}"
CHANNEL_PREFIX = f"{domain.CHANNEL}|"


def merge_partial(
    state: MonthPartials | None,
    partition: int,
    seq: int,
    counts: Mapping[str, list[int]],
    *,
    reset: bool = False,
) -> tuple[MonthPartials, set[str]] | None:
    """The month's state with one partition's partial applied, and the segment keys it touched.

    A ``reset`` partial replaces what the month holds for the partition (the keys it drops are
    touched: their totals change). None when the partial is older than what the month already
    holds for that partition.
    """
    merged: MonthPartials = dict(state or {})
    slot = str(partition)
    held = merged.get(slot)
    if held is not None and seq < held["seq"]:
        return None
    touched = set(counts)
    if reset:
        touched.update(held["counts"] if held else ())
        updated_counts: dict[str, Any] = dict(counts)
    else:
        updated_counts = dict(held["counts"]) if held else {}
        updated_counts.update(counts)
    # A segment at zero is published once (it is touched) and then forgotten, so that what a
    # partition holds stays as small as what it counts (the cardinality guard's bound).
    for key, figure in counts.items():
        if not any(figure):
            del updated_counts[key]
    merged[slot] = {"seq": seq, "counts": updated_counts}
    if GLOBAL_KEY in counts:
        # The global active-user count is every channel segment's denominator.
        touched.update(
            key
            for part in merged.values()
            for key in part["counts"]
            if key.startswith(CHANNEL_PREFIX)
        )
    return merged, touched


def segment_totals(state: MonthPartials, keys: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(tickets, active_users) per segment key, summed over partitions."""
    parts = [part["counts"] for part in state.values()]
    global_actives = sum(counts.get(GLOBAL_KEY, (0, 0))[1] for counts in parts)
    totals: dict[str, tuple[int, int]] = {}
    for key in keys:
        tickets = sum(counts[key][0] for counts in parts if key in counts)
        if key.startswith(CHANNEL_PREFIX):
            actives = global_actives
        else:
            actives = sum(counts[key][1] for counts in parts if key in counts)
        totals[key] = (tickets, actives)
    return totals


def all_segment_keys(state: MonthPartials) -> set[str]:
    return {key for part in state.values() for key in part["counts"]}
