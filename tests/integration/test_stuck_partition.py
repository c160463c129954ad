"""A stream partition whose fetched records never reached the agent is read again from its commit
(streams/worker/positions.py, rule 3), and the figures end exact.

The loss is injected (tests/integration/faults/sitecustomize.py) in a real worker on a real
broker: once, the records of a fetch of the facts topic are thrown away after the consumer moved
past them, and later records of those partitions follow (Faust committed over such a hole, also
before a partition's first commit). It happened for real in one CI run (two workers, one
killed): ``cci-facts/3`` committed at 26, its end at 27, and the figures short for good.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.bench.measure import metric_values
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS
from streams.worker.positions import STUCK_COMMIT_SECONDS
from tests.integration.harness import count_half_the_tickets, produce, wait_for_figures, wait_until

FAULTS = Path(__file__).parent / "faults"


@pytest.mark.parametrize("lost", ["after_commits", "before_the_first_commit"])
def test_facts_lost_between_fetch_and_agent_are_read_again(pipeline, dataset, lost: str) -> None:
    data, expected = dataset
    flag = pipeline.tmp_path / "drop-the-next-facts-fetch"
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    if lost == "before_the_first_commit":
        flag.touch()  # the worker's very first facts fetch is thrown away
    path = os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))
    worker = pipeline.worker(FAULT_DROP_FACTS_FLAG=str(flag), PYTHONPATH=path)
    # Later facts of the same partitions follow the lost ones (Faust committed over the hole they
    # leave), and none repeats them.
    if lost == "before_the_first_commit":
        produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
        wait_until(lambda: not flag.exists(), 60, "no facts fetch was dropped")
        produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    else:
        half, _ = count_half_the_tickets(pipeline, data, [worker])
        # Every facts partition has been read and committed; the next facts fetch is dropped.
        flag.touch()
        produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets[half:])
        wait_until(lambda: not flag.exists(), 30, "no facts fetch was dropped")
        produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    wait_for_figures(
        pipeline.bootstrap, expected, timeout=STUCK_COMMIT_SECONDS + 60, workers=[worker]
    )
    assert "reading it again from its commit" in worker.log_path.read_text()
    rereads = metric_values(worker.get("/metrics"), ["cci_stream_rereads_total"])
    assert (rereads["cci_stream_rereads_total"] or 0) >= 1
    assert worker.health() == 200
