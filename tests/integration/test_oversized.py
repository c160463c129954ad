"""Records that fit the input limits but not a Kafka request: nothing may stop the pipeline."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import orjson

from streams.bench.measure import metric_values
from streams.dev.produce import produce_records
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_DEAD_LETTERS, TOPIC_TICKETS, load_settings
from tests.integration.harness import produce, read_topic, wait_for_figures, wait_until

MIB = 1024 * 1024


def test_a_7_mb_record_is_dead_lettered_cut_and_later_events_count(pipeline) -> None:
    now = datetime.now(UTC)
    stamp = now.isoformat()
    huge = orjson.dumps({"user_id": "u-huge", "occurred_at": stamp, "pad": "x" * (7 * MIB)})
    activity = [
        orjson.dumps({"user_id": f"u{i}", "occurred_at": stamp, "segments": {"plan": "free"}})
        for i in range(20)
    ]
    tickets = [
        orjson.dumps({"ticket_id": f"t{i}", "user_id": f"u{i}", "created_at": stamp})
        for i in range(5)
    ]
    worker = pipeline.worker()
    sent = asyncio.run(
        produce_records(
            pipeline.bootstrap,
            TOPIC_ACTIVITY,
            [(b"u-huge", huge)],
            one_record_batches=True,
            client_kwargs={"max_request_size": 8 * MIB},
        )
    )
    assert sent == 1
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, tickets)

    counted = recount([huge, *activity], tickets, [], now, load_settings({}))
    assert counted.dead_letters == {"oversized": 1}
    wait_for_figures(pipeline.bootstrap, counted.figures, timeout=120, workers=[worker])

    letters = [orjson.loads(v) for _, v in read_topic(pipeline.bootstrap, TOPIC_DEAD_LETTERS)]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["reason"] == "oversized"
    assert letter["raw_truncated"] is True
    assert letter["raw_bytes"] == len(huge)
    kept = base64.b64decode(letter["raw"])
    assert 0 < len(kept) < MIB and huge.startswith(kept)
    assert len(orjson.dumps(letter)) < MIB
    # Ingest made progress all along: healthy, and its stall gauge says so.
    assert worker.health() == 200
    values = metric_values(worker.get("/metrics"), ["cci_ingest_stalled"])
    assert values["cci_ingest_stalled"] == 0.0
    wait_until(lambda: worker.process.poll() is None, 1, "the worker died")


def test_oversized_partials_neither_crash_a_worker_nor_change_the_figures(pipeline) -> None:
    """Distinct long segment values (each within the limits) made the partial counts exceed
    1 MB and crashed every worker at every restart; so did 100 tickets with a 60 KB channel."""
    now = datetime.now(UTC)
    stamp = now.isoformat()
    users = 3000

    def long_value(dimension: str, n: int) -> str:
        return f"{n:05d}-{dimension}-" + "v" * 110

    activity = [
        orjson.dumps(
            {
                "user_id": f"u{n}",
                "occurred_at": stamp,
                "segments": {d: long_value(d, n) for d in ("plan", "product", "region")},
            }
        )
        for n in range(users)
    ]
    # A leap second is a valid time: counted, in its month (issue 13, point 10).
    leap = now.strftime("%Y-%m-%dT%H:%M:60Z")
    activity.append(orjson.dumps({"user_id": "u-leap", "occurred_at": leap}))
    tickets = [
        orjson.dumps(
            {"ticket_id": f"t{n}", "user_id": f"u{n}", "created_at": stamp, "channel": "c" * 60_000}
        )
        for n in range(100)
    ]
    tickets += [
        orjson.dumps({"ticket_id": f"ok{n}", "user_id": f"u{n}", "created_at": stamp})
        for n in range(0, users, 20)
    ]
    worker = pipeline.worker()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, tickets)

    counted = recount(activity, tickets, [], now, load_settings({}))
    wait_for_figures(pipeline.bootstrap, counted.figures, timeout=180, workers=[worker])

    assert counted.dead_letters == {"segment_too_long": 100}
    month = now.strftime("%Y-%m")
    assert counted.figures[(month, "all", "all")] == (users // 20, users + 1)
    # The guard acted: at most 100 values by name per facts partition, and the rest as other.
    for dimension in ("plan", "product", "region"):
        assert (month, dimension, "other") in counted.figures
        assert len([key for key in counted.figures if key[1] == dimension]) <= 4 * 100 + 1
    assert worker.process is not None and worker.process.poll() is None
    log = worker.log_tail(1_000_000)
    assert "We experienced a crash" not in log
    assert "cardinality guard: region of" in log
    letters = [orjson.loads(v) for _, v in read_topic(pipeline.bootstrap, TOPIC_DEAD_LETTERS)]
    assert [letter["reason"] for letter in letters] == ["segment_too_long"] * 100
    values = metric_values(worker.get("/metrics"), ["cci_segment_guard_acted"])
    assert (values["cci_segment_guard_acted"] or 0) >= 3
    assert worker.health() == 200
