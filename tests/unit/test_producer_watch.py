"""The producer watch: a worker whose sends stop leaving says so (issue 18)."""

from __future__ import annotations

from faust.types import TP

from streams import metrics
from streams.worker.producer_watch import PRODUCER_STALL_SECONDS, ProducerWatch
from streams.worker.recovery import mismatched


def _gauge(name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def test_sends_that_keep_leaving_are_never_old() -> None:
    watch = ProducerWatch()
    for second in range(100):
        watch.on_send_initiated(None, "t", None, 1, 1)
        assert watch.sample(now=second + 0.1) < 1.0
        watch.on_send_completed(None, None, None)
    assert watch.sample(now=200.0) == 0.0
    assert _gauge("cci_producer_buffer_records") == 0


def test_a_crawling_producer_grows_old_although_records_still_leave() -> None:
    buffered = [0]
    watch = ProducerWatch(buffer_size=lambda: buffered[0])
    # Ten records come in per second, one leaves: the oldest waiting one ages with the clock.
    for second in range(40):
        buffered[0] += 10
        watch.sample(now=float(second))
        buffered[0] -= 1
        watch.on_send_initiated(None, "t", None, 1, 1)
        watch.on_send_completed(None, None, None)
    age = watch.sample(now=40.0)
    assert age > PRODUCER_STALL_SECONDS
    assert _gauge("cci_producer_oldest_pending_seconds") == age
    assert _gauge("cci_producer_buffer_records") == buffered[0] == 360


def test_a_send_that_never_finishes_stalls_the_producer() -> None:
    watch = ProducerWatch()
    watch.on_send_initiated(None, "t", None, 1, 1)
    watch.sample(now=0.0)
    assert watch.sample(now=PRODUCER_STALL_SECONDS + 1) > PRODUCER_STALL_SECONDS
    watch.on_send_error(None, RuntimeError("gone"), None)
    assert watch.sample(now=PRODUCER_STALL_SECONDS + 2) == 0.0


def test_only_offsets_above_the_changelog_end_are_rebuilt() -> None:
    a, b, c, d = (TP("changelog", p) for p in range(4))
    offsets = {a: 73, b: 70, c: None, d: -1}
    highwaters = {a: 71, b: 71, c: 71, d: 71}
    assert mismatched(offsets, highwaters) == {a}
