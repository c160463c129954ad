"""The Quix Streams peer's own rules (streams/bench/peers/quix_cci.py): winners, deltas and counts.

Its whole run is checked against the batch recount by the bench smoke test; these pin the parts
that decide exactness on the way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PEER = Path(__file__).resolve().parents[2] / "streams" / "bench" / "peers" / "quix_cci.py"
DIMENSIONS = ("plan", "product", "region", "tenure")


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quix_cci", PEER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quix_cci"] = module
    spec.loader.exec_module(module)
    return module


FREE = ("free", "docs", "eu", "new")
PAID = ("paid", "docs", "eu", "new")


def test_a_user_months_first_version_counts_once(peer: ModuleType) -> None:
    assert peer.user_month_change(None, 100, FREE) == ([100, list(FREE)], [[list(FREE), 1]])


def test_a_later_or_equal_version_changes_nothing(peer: ModuleType) -> None:
    held = [100, list(FREE)]

    assert peer.user_month_change(held, 200, PAID) == (None, [])
    assert peer.user_month_change(held, 100, FREE) == (None, [])
    # Same time: the smaller attribute tuple wins, so "paid" does not replace "free".
    assert peer.user_month_change(held, 100, PAID) == (None, [])


def test_an_earlier_version_with_other_segments_moves_the_user(peer: ModuleType) -> None:
    held = [100, list(PAID)]

    assert peer.user_month_change(held, 50, FREE) == (
        [50, list(FREE)],
        [[list(PAID), -1], [list(FREE), 1]],
    )
    assert peer.user_month_change(held, 50, PAID) == ([50, list(PAID)], [])


TICKET = (*FREE, "web")


def test_an_earlier_ticket_version_in_another_month_moves_it_there(peer: ModuleType) -> None:
    held = [500, list(TICKET), "2026-11"]
    earlier = (*FREE, "email")

    state, changes = peer.ticket_change(held, 400, earlier, "2026-10")

    assert state == [400, list(earlier), "2026-10"]
    assert changes == [("2026-11", [[list(TICKET), -1]]), ("2026-10", [[list(earlier), 1]])]
    assert peer.ticket_change(held, 600, earlier, "2026-11") == (None, [])
    assert peer.ticket_change(held, 400, TICKET, "2026-11") == ([400, list(TICKET), "2026-11"], [])


def counts(peer: ModuleType) -> tuple[Any, dict[str, Any]]:
    state: dict[str, Any] = {}
    return peer.MonthCounts(state.get, state.__setitem__, DIMENSIONS), state


def test_counts_per_segment_and_the_global_figure(peer: ModuleType) -> None:
    month, _ = counts(peer)

    figures = month.apply("a", [[list(FREE), 1]])

    assert ["all", "all", 0, 1] in figures and ["plan", "free", 0, 1] in figures
    assert len(figures) == 5  # all|all and one segment per user dimension


def test_channels_count_tickets_over_every_active_user(peer: ModuleType) -> None:
    month, _ = counts(peer)
    month.apply("a", [[list(FREE), 1]])
    month.apply("a", [[list(PAID), 1]])

    figures = month.apply("t", [[list(TICKET), 1]])
    assert ["channel", "web", 1, 2] in figures

    # One more active user changes every channel's denominator: the channel is republished.
    figures = month.apply("a", [[list(("vip", "chat", "us", "12m+")), 1]])
    assert ["channel", "web", 1, 3] in figures


def test_a_channel_left_without_tickets_is_published_empty(peer: ModuleType) -> None:
    month, _ = counts(peer)
    month.apply("a", [[list(FREE), 1]])
    month.apply("t", [[list(TICKET), 1]])

    figures = month.apply("t", [[list(TICKET), -1], [list((*FREE, "email")), 1]])

    assert ["channel", "web", 0, 0] in figures
    assert ["channel", "email", 1, 1] in figures
    assert ["plan", "free", 1, 1] in figures  # moved within the segment: unchanged totals
