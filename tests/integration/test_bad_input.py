"""Every kind of bad input goes to cci-dead-letters with its reason and changes nothing else."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson

from streams.settings import TOPIC_ACTIVITY, TOPIC_DEAD_LETTERS, TOPIC_PROFILES, TOPIC_TICKETS
from tests.integration.harness import produce, read_topic, wait_for_figures, wait_until


def test_bad_input_is_dead_lettered_with_reason(pipeline) -> None:
    now = datetime.now(UTC)
    month = now.strftime("%Y-%m")
    stamp = now.isoformat()
    good_activity = [
        orjson.dumps({"user_id": "u1", "occurred_at": stamp, "segments": {"plan": "free"}}),
        orjson.dumps({"user_id": "u2", "occurred_at": stamp, "segments": {"plan": "paid"}}),
    ]
    good_ticket = orjson.dumps(
        {
            "ticket_id": "t1",
            "user_id": "u1",
            "created_at": stamp,
            "channel": "chat",
            "segments": {"plan": "free"},
        }
    )
    bad_activity = {
        "invalid_utf8": b'{"user_id": "\xff\xfe", "occurred_at": "' + stamp.encode() + b'"}',
        "invalid_json": b'{"user_id": "u9", ',
        "not_an_object": b'["u9"]',
        "missing_field": orjson.dumps({"occurred_at": stamp}),
        "wrong_type": orjson.dumps({"user_id": 42, "occurred_at": stamp}),
        "invalid_timestamp": orjson.dumps({"user_id": "u9", "occurred_at": "2026-02-30T10:00:00Z"}),
        "oversized": orjson.dumps({"user_id": "u9", "occurred_at": stamp, "pad": "x" * 2000}),
        "too_late": orjson.dumps(
            {"user_id": "u9", "occurred_at": (now - timedelta(days=800)).isoformat()}
        ),
        "future_timestamp": orjson.dumps(
            {"user_id": "u9", "occurred_at": (now + timedelta(days=30)).isoformat()}
        ),
    }
    bad_segments = orjson.dumps({"user_id": "u9", "occurred_at": stamp, "segments": ["free"]})
    bad_ticket = orjson.dumps({"ticket_id": "t9", "user_id": "u9", "created_at": "yesterday"})
    pipeline.env["CCI_MAX_EVENT_BYTES"] = "1024"
    worker = pipeline.worker()

    produce(
        pipeline.bootstrap, TOPIC_ACTIVITY, [*good_activity, *bad_activity.values(), bad_segments]
    )
    produce(pipeline.bootstrap, TOPIC_TICKETS, [good_ticket, bad_ticket, b""])

    expected_bad = len(bad_activity) + 3
    wait_until(
        lambda: len(read_topic(pipeline.bootstrap, TOPIC_DEAD_LETTERS)) >= expected_bad,
        60,
        "dead letters did not arrive",
    )
    letters = [orjson.loads(v) for _, v in read_topic(pipeline.bootstrap, TOPIC_DEAD_LETTERS)]
    assert len(letters) == expected_bad
    by_raw = {base64.b64decode(letter["raw"]): letter for letter in letters}
    for reason, raw in bad_activity.items():
        letter = by_raw[raw]
        assert letter["reason"] == reason, letter
        assert letter["topic"] == TOPIC_ACTIVITY
        assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
        assert letter["error"].startswith(reason)
    assert by_raw[bad_segments]["reason"] == "wrong_type"
    assert by_raw[bad_ticket]["reason"] == "invalid_timestamp"
    assert by_raw[bad_ticket]["topic"] == TOPIC_TICKETS
    assert by_raw[b""]["reason"] == "invalid_json"

    # Only the good events count.
    expected = {
        (month, "all", "all"): (1, 2),
        (month, "plan", "free"): (1, 1),
        (month, "plan", "paid"): (0, 1),
        (month, "product", "unknown"): (1, 2),
        (month, "region", "unknown"): (1, 2),
        (month, "tenure", "unknown"): (1, 2),
        (month, "channel", "chat"): (1, 2),
    }
    wait_for_figures(pipeline.bootstrap, expected)
    assert worker.health() == 200
    # The web server answers before the worker has its partitions: 503 until it is ready.
    assert 503 in worker.statuses_seen and worker.statuses_seen[-1] == 200
    metrics_text = worker.get("/metrics")
    assert 'cci_dead_letters_total{reason="invalid_json"} 2.0' in metrics_text
    assert 'cci_dead_letters_total{reason="too_late"} 1.0' in metrics_text
    assert 'cci_events_consumed_total{topic="user-activity"}' in metrics_text
    # Everything is read: the ingest's lag per input topic is back to zero (it was measured).
    wait_until(
        lambda: all(
            f'cci_consumer_lag_records{{topic="{topic}"}} 0.0' in worker.get("/metrics")
            for topic in (TOPIC_ACTIVITY, TOPIC_TICKETS)
        ),
        30,
        "consumer lag did not come back to zero",
    )
    assert worker.process is not None and worker.process.poll() is None


def test_a_profile_whose_month_cannot_be_computed_is_skipped_not_fatal(pipeline) -> None:
    """Year 9999 behind UTC once killed the profile follower: the worker stayed "starting"."""
    now = datetime.now(UTC)
    poison = {
        "user_id": "poison1",
        "signup_at": "9999-12-31T23:59:59-00:01",
        "segments": {"plan": "free"},
        "updated_at": now.isoformat(),
    }
    good = {**poison, "signup_at": "2020-01-01T00:00:00Z", "segments": {"plan": "pro"}}
    produce(pipeline.bootstrap, TOPIC_PROFILES, [orjson.dumps(poison), orjson.dumps(good)])
    worker = pipeline.worker()  # healthy: the profile table was loaded past the bad record
    produce(
        pipeline.bootstrap,
        TOPIC_ACTIVITY,
        [orjson.dumps({"user_id": "poison1", "occurred_at": now.isoformat()})],
    )
    month = now.strftime("%Y-%m")
    figures = wait_for_figures(
        pipeline.bootstrap,
        {
            (month, "all", "all"): (0, 1),
            (month, "plan", "pro"): (0, 1),
            (month, "product", "unknown"): (0, 1),
            (month, "region", "unknown"): (0, 1),
            (month, "tenure", "12m+"): (0, 1),
        },
        workers=[worker],
    )
    assert figures
    assert 'cci_invalid_profiles_total{reason="invalid_timestamp"} 1.0' in worker.get("/metrics")
