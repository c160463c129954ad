"""Records that fit the input limits but not a Kafka request: nothing may stop the pipeline."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import orjson

from streams.batch import recount
from streams.bench.measure import metric_values
from streams.dev.produce import produce_records
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
