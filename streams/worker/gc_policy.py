"""The worker's policy for Python's cyclic garbage collector.

A full collection traverses every tracked object and stops the event loop meanwhile; with
CPython's default thresholds those pauses were the largest part of the worker's tail latency
(measured in docs/performance.md). Two changes:

* ``configure`` raises the thresholds, so records and rows that live for one batch die by
  reference counting before a collection promotes them to an older generation (whose growth is
  what triggers full collections);
* ``freeze_survivors`` (after each recovery: the heap was just rebuilt) collects once and moves
  the survivors — Faust's, aiokafka's and the modules' objects, ~87,000 — to the permanent
  generation, which later collections skip. It unfreezes first, so what an earlier recovery froze
  and has been dropped since is collected, not leaked.

Reference counting still frees almost everything; this only decides when cycles are looked for.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

# Container allocations between young collections (CPython's default, 700, promoted every batch
# in flight). Then young collections per
# gen-1 collection and gen-1 collections per full one (defaults 10 and 10).
YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 20


def configure() -> None:
    """At worker start."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def freeze_survivors() -> None:
    """Collect everything, then exempt the survivors from later collections."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    log.info(
        "garbage collector: %d objects frozen, %d collected in %.0f ms",
        gc.get_freeze_count(),
        collected,
        (time.perf_counter() - started) * 1000,
    )
