"""Alerts through the real broker: one record per change of state, none repeated after a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.settings import TOPIC_ACTIVITY, TOPIC_ALERTS, TOPIC_TICKETS
from tests.integration.harness import latest_updates, produce, read_topic, wait_until

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "cci-alerts.schema.json"
RULES = """
[[rule]]
name = "busy-plan"
dimension = "plan"
segment = "*"
above = 1.0
min_active_users = 2
"""


def activity(user: str, plan: str, stamp: str) -> bytes:
    return orjson.dumps({"user_id": user, "occurred_at": stamp, "segments": {"plan": plan}})


def ticket(ticket_id: str, user: str, plan: str, stamp: str) -> bytes:
    return orjson.dumps(
        {"ticket_id": ticket_id, "user_id": user, "created_at": stamp, "segments": {"plan": plan}}
    )


def alerts(bootstrap: str) -> list[dict[str, Any]]:
    """Every cci-alerts record in publication order per partition (the key says which alert)."""
    records = []
    for key, value in read_topic(bootstrap, TOPIC_ALERTS):
        assert key is not None and value is not None
        record = orjson.loads(value)
        assert key.decode() == (
            f"{record['rule']}|{record['month']}|{record['dimension']}|{record['segment']}"
        )
        records.append(record)
    return records


def summary(records: list[dict[str, Any]]) -> list[tuple[str, str, str, int, int]]:
    return sorted(
        (r["segment"], r["state"], r["condition"], r["tickets"], r["active_users"]) for r in records
    )


def test_alerts_fire_and_clear_once_and_survive_a_restart(pipeline) -> None:
    import jsonschema

    now = datetime.now(UTC)
    month, stamp = now.strftime("%Y-%m"), now.isoformat()
    rules = pipeline.tmp_path / "rules.toml"
    rules.write_text(RULES)
    pipeline.env["CCI_ALERT_RULES"] = str(rules)
    bootstrap = pipeline.bootstrap
    worker = pipeline.worker()

    # pro: 3 tickets / 2 users = 1.5 > 1.0 fires; free: 0 / 2 does not.
    produce(bootstrap, TOPIC_ACTIVITY, [activity(u, "pro", stamp) for u in ("u1", "u2")])
    produce(bootstrap, TOPIC_ACTIVITY, [activity(u, "free", stamp) for u in ("u3", "u4")])
    produce(bootstrap, TOPIC_TICKETS, [ticket(f"t{i}", "u1", "pro", stamp) for i in (1, 2, 3)])
    wait_until(lambda: len(alerts(bootstrap)) >= 1, 60, "no alert fired")

    # Still above (4 / 2): the figure is republished, the alert is not.
    produce(bootstrap, TOPIC_TICKETS, [ticket("t4", "u1", "pro", stamp)])
    wait_until(
        lambda: latest_updates(bootstrap).get(f"{month}|plan|pro", {}).get("tickets") == 4,
        60,
        "the fourth ticket was not counted",
    )
    assert summary(alerts(bootstrap)) == [("pro", "firing", "above", 3, 2)]

    # Two more active users: 4 / 3 is still above, 4 / 4 = 1.0 is not and clears it. free: 3 / 2
    # fires (1 / 2 and 2 / 2 do not). Each change crosses at exactly one figure, however the
    # worker happens to batch the events.
    produce(bootstrap, TOPIC_ACTIVITY, [activity(f"u{i}", "pro", stamp) for i in (5, 6)])
    produce(bootstrap, TOPIC_TICKETS, [ticket(f"t{i}", "u3", "free", stamp) for i in (5, 6, 7)])
    wait_until(lambda: len(alerts(bootstrap)) >= 3, 60, "pro did not clear or free did not fire")
    assert summary(alerts(bootstrap)) == [
        ("free", "firing", "above", 3, 2),
        ("pro", "cleared", "above", 4, 4),
        ("pro", "firing", "above", 3, 2),
    ]
    metrics_text = worker.get("/metrics")
    assert 'cci_alerts_emitted_total{rule="busy-plan",state="firing"} 2.0' in metrics_text
    assert 'cci_alerts_emitted_total{rule="busy-plan",state="cleared"} 1.0' in metrics_text

    # A restarted worker republishes every figure and judges it again: free, still firing, and
    # pro, still cleared, publish nothing.
    before = {key: update["version"] for key, update in latest_updates(bootstrap).items()}
    worker.stop()
    pipeline.worker()
    wait_until(
        lambda: all(
            update["version"] > before.get(key, 0)
            for key, update in latest_updates(bootstrap).items()
        ),
        60,
        "the restarted worker did not republish every figure",
    )
    # Then a change it does publish: one more free user, 3 / 3 = 1.0, clears free.
    produce(bootstrap, TOPIC_ACTIVITY, [activity("u11", "free", stamp)])
    wait_until(lambda: len(alerts(bootstrap)) >= 4, 60, "the restarted worker cleared nothing")

    records = alerts(bootstrap)
    assert summary(records) == [
        ("free", "cleared", "above", 3, 3),
        ("free", "firing", "above", 3, 2),
        ("pro", "cleared", "above", 4, 4),
        ("pro", "firing", "above", 3, 2),
    ]
    validator = jsonschema.Draft202012Validator(
        json.loads(SCHEMA.read_text()),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    for record in records:
        validator.validate(record)
        assert record["rule"] == "busy-plan" and record["month"] == month
        assert record["threshold"] == 1.0 and record["min_active_users"] == 2
    pro = sorted((r for r in records if r["segment"] == "pro"), key=lambda r: r["version"])
    assert [(r["state"], r["cci"]) for r in pro] == [("firing", 1.5), ("cleared", 1.0)]
