"""The worker's garbage-collector policy: survivors frozen at recovery, nothing leaked by it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.worker import gc_policy as collector


class Node:
    """A cycle-capable object that can be weakly referenced."""

    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture(autouse=True)
def restore_the_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_configure_raises_every_threshold_above_cpythons_defaults() -> None:
    collector.configure()
    assert gc.get_threshold() == (
        collector.YOUNG_THRESHOLD,
        collector.MIDDLE_THRESHOLD,
        collector.OLD_THRESHOLD,
    )
    assert all(
        new > default for new, default in zip(gc.get_threshold(), (700, 10, 10), strict=True)
    )


def test_freeze_survivors_freezes_the_live_heap_and_collects_cycles_frozen_earlier() -> None:
    first, second = Node(), Node()
    first.peer, second.peer = second, first  # a cycle: only the collector can free it
    alive = weakref.ref(first)

    collector.freeze_survivors()
    assert gc.get_freeze_count() > 0
    del first, second
    gc.collect()
    assert alive() is not None  # frozen: no collection looks at it

    collector.freeze_survivors()  # the next recovery unfreezes first
    assert alive() is None
