"""The latest cci-updates per key equal a batch recount of the raw events, exactly.

Two ways at-least-once delivery tries to break that: resent events and a worker killed with
SIGKILL mid-stream (several workers sharing the group: test_multiworker.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from streams.bench.measure import metric_values
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
)
from tests.integration.harness import (
    figures_of,
    latest_updates,
    produce,
    produce_events,
    read_topic,
    samples_by_label,
    wait_consumed,
    wait_for_figures,
    wait_until,
)


def test_resent_events_count_once(pipeline, dataset) -> None:
    data, expected = dataset
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    started = time.monotonic()
    produce_events(pipeline.bootstrap, data)
    wait_for_figures(pipeline.bootstrap, expected)
    # Bursts are coalesced: the busiest key gets about one record per emit interval (0.3 s in
    # the tests), not one per event.
    elapsed = time.monotonic() - started
    per_key = Counter(key for key, _ in read_topic(pipeline.bootstrap, TOPIC_UPDATES))
    busiest = max(per_key.values())
    events = len(data.activity) + len(data.tickets)
    assert busiest <= elapsed / 0.3 + 3 and busiest < events / 20, (busiest, events, elapsed)
    page = worker.get("/metrics")
    repeats_before = samples_by_label(page, "cci_repeat_facts", "kind")
    active_facts = (
        len(data.activity)
        - metric_values(page, ["cci_inactive_activities"])["cci_inactive_activities"]
    )
    # A producer that resends everything (and then some, out of order) changes nothing.
    produce_events(pipeline.bootstrap, data, slice(None, None, -1))
    produce_events(pipeline.bootstrap, data)
    # The figures are already right, so comparing them proves something only once the resends
    # were read (ingest) and reached the aggregate (every resent fact counted as a repeat).
    wait_consumed(
        worker, {TOPIC_ACTIVITY: 3 * len(data.activity), TOPIC_TICKETS: 3 * len(data.tickets)}
    )
    resent = {"active": 2 * active_facts, "ticket": 2 * len(data.tickets)}

    def repeats_added() -> dict[str, float]:
        now = samples_by_label(worker.get("/metrics"), "cci_repeat_facts", "kind")
        return {kind: now.get(kind, 0) - repeats_before.get(kind, 0) for kind in resent}

    deadline = time.monotonic() + 60
    while (added := repeats_added()) != resent and time.monotonic() < deadline:
        time.sleep(0.5)
    assert added == resent, f"repeat facts after the resends: {added}, expected {resent}"
    assert figures_of(latest_updates(pipeline.bootstrap)) == expected


# It failed about 1 run in 6 until the restarted worker sought every stream partition without a
# commit to its beginning (streams/worker/positions.py; docs/embedded-broker.md): 35 of 35 since.
def test_sigkill_mid_stream_then_restart(pipeline, dataset) -> None:
    data, expected = dataset
    # "auto": the switch forgotten (issue 13, point 11) must not matter on the embedded broker.
    # It resolves to the same workarounds as "true" (asserted from the log below), which every
    # other pipeline test sets, so the kill is not run a second time with "true".
    pipeline.env["CCI_EMBEDDED_BROKER"] = "auto"
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    half = len(data.activity) // 2
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[:half])
    first = pipeline.worker("first")
    # Kill while the rest of the activity is still arriving: state, changelog and offsets are
    # mid-flight. The tickets come only after the kill, so what was published then is
    # certainly incomplete, however fast the worker is.
    feeder = threading.Thread(
        target=lambda: produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity[half:])
    )
    feeder.start()
    wait_until(lambda: bool(latest_updates(pipeline.bootstrap)), 60, "nothing was published")
    first.kill()
    at_kill = figures_of(latest_updates(pipeline.bootstrap))
    feeder.join()
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    second = pipeline.worker("second")
    wait_for_figures(pipeline.bootstrap, expected, workers=[second])
    assert at_kill and at_kill != expected, "the kill came too late to test recovery"
    assert "embedded_broker=True" in second.log_path.read_text()
