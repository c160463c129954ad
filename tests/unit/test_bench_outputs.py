"""How ``cci bench`` reads a peer's output: partial records, and a table engine's change stream
(complete months, retractions) folded into the same figures; and when an output first had one."""

from __future__ import annotations

from typing import NamedTuple

import orjson

from streams.bench.measure import EMPTY, FigureHistory, seconds_between
from streams.bench.outputs import OutputTail, PeerDecoder, decode_update


def record(month: str, figures: list[list[object]], **fields: object) -> bytes:
    return orjson.dumps({"month": month, "figures": figures, **fields})


def fold(values: list[bytes]) -> dict[tuple[str, str, str], tuple[int, int]]:
    decode, history = PeerDecoder(), FigureHistory()
    for timestamp, value in enumerate(values):
        for key, figure in decode(None, value):
            history.apply(key, figure, timestamp)
    return history.figures()


def test_partial_records_change_only_the_figures_they_list() -> None:
    figures = fold(
        [
            record("2026-10", [["all", "all", 0, 2], ["plan", "pro", 0, 2]]),
            record("2026-10", [["all", "all", 1, 2]]),
        ]
    )

    assert figures == {("2026-10", "all", "all"): (1, 2), ("2026-10", "plan", "pro"): (0, 2)}


def test_a_complete_record_zeroes_the_figures_of_its_month_it_no_longer_lists() -> None:
    figures = fold(
        [
            record("2026-10", [["all", "all", 0, 1], ["plan", "free", 0, 1]], complete=True),
            record("2026-11", [["all", "all", 0, 1], ["plan", "free", 0, 1]], complete=True),
            # The user's earlier version says "pro": "free" is gone from October only.
            record("2026-10", [["all", "all", 0, 1], ["plan", "pro", 0, 1]], complete=True),
        ]
    )

    assert figures == {
        ("2026-10", "all", "all"): (0, 1),
        ("2026-10", "plan", "pro"): (0, 1),
        ("2026-11", "all", "all"): (0, 1),
        ("2026-11", "plan", "free"): (0, 1),
    }


def test_a_retraction_is_skipped_whichever_side_of_its_replacement_it_comes() -> None:
    old = [["all", "all", 0, 1]]
    new = [["all", "all", 0, 2]]
    before = record("2026-10", old, complete=True, diff=1, time=2)
    for order in (
        [
            before,
            record("2026-10", old, complete=True, diff=-1, time=4),
            record("2026-10", new, complete=True, diff=1, time=4),
        ],
        [
            before,
            record("2026-10", new, complete=True, diff=1, time=4),
            record("2026-10", old, complete=True, diff=-1, time=4),
        ],
    ):
        assert fold(order) == {("2026-10", "all", "all"): (0, 2)}


def test_a_tombstone_or_empty_month_decodes_to_nothing() -> None:
    decode = PeerDecoder()

    assert decode(b"2026-10", None) == []
    assert decode(None, record("2026-10", [], complete=True)) == []
    assert decode(None, record("2026-10", [["all", "all", 0, 0]])) == [
        (("2026-10", "all", "all"), EMPTY)
    ]


# --- the first output ----------------------------------------------------------------------------


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None
    timestamp: int


def update(month: str, tickets: int, users: int) -> bytes:
    return orjson.dumps(
        {
            "month": month,
            "dimension": "all",
            "segment": "all",
            "tickets": tickets,
            "active_users": users,
        }
    )


def test_the_first_output_is_the_earliest_record_with_figures_over_every_partition() -> None:
    tail = OutputTail("unused:0", "cci-updates", decode_update)
    # Partitions come one after the other, the later one in a later fetch, with earlier records.
    tail.fold([Record(None, None, 900), Record(None, update("2026-10", 0, 1), 1000)])
    tail.fold([Record(None, update("2026-11", 0, 1), 1200)])
    assert tail.first_record_ms == 1000
    tail.fold([Record(None, None, 700), Record(None, update("2026-12", 1, 1), 800)])

    assert tail.first_record_ms == 800  # the tombstone at 700 carries no figure
    assert seconds_between(500, tail.first_record_ms) == 0.3


def test_no_output_record_gives_no_first_output() -> None:
    tail = OutputTail("unused:0", "cci-updates", decode_update)
    tail.fold([Record(b"2026-10|all|all", None, 100)])

    assert tail.first_record_ms is None
    assert seconds_between(50, tail.first_record_ms) is None
