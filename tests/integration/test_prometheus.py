"""A real Prometheus scrapes a running worker with the project's alert rules loaded, and its HTTP
API returns the worker's series: what docker-compose.yml and deploy/k8s/ set up."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.settings import TOPIC_ACTIVITY
from tests.integration.harness import produce, wait_until
from tests.integration.prometheus import PROMETHEUS, PrometheusServer, binary_or_skip


def test_prometheus_scrapes_the_worker_and_evaluates_the_rules(pipeline) -> None:
    binary = binary_or_skip(PROMETHEUS)
    worker = pipeline.worker()
    target = f"127.0.0.1:{worker.port}"
    stamp = datetime.now(UTC).isoformat()
    events = [
        orjson.dumps({"user_id": f"u{i}", "occurred_at": stamp, "segments": {"plan": "pro"}})
        for i in range(5)
    ]
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, [*events, b"not json"])

    with PrometheusServer(binary, [target], pipeline.tmp_path / "prometheus.log") as prometheus:
        labels = (("instance", target), ("job", "cci-worker"))

        def consumed() -> dict[tuple[tuple[str, str], ...], float]:
            return prometheus.query('cci_events_consumed_total{topic="user-activity"}')

        wait_until(
            lambda: consumed().get((*labels, ("topic", "user-activity"))) == 6.0,
            60,
            "Prometheus never saw the worker consume the 6 records",
        )
        assert prometheus.query('up{job="cci-worker"}') == {labels: 1.0}
        dead = prometheus.query("cci_dead_letters_total")
        assert sum(dead.values()) == 1.0
        assert all(dict(key)["instance"] == target for key in dead)
        wait_until(
            lambda: prometheus.query("cci_user_months").get(labels) == 5.0,
            60,
            "Prometheus never saw the 5 user-months",
        )

        # The rules are loaded and evaluate against the real series without an error.
        def rule_health() -> dict[str, str]:
            groups = prometheus.api("/api/v1/rules")["groups"]
            return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}

        wait_until(
            lambda: set(rule_health().values()) == {"ok"},
            30,
            "the alert rules were not all evaluated without error",
        )
        assert set(rule_health()) == {
            "CciWorkerDown",
            "CciInputLagGrowing",
            "CciSinkLag",
            "CciDeadLetterRate",
            "CciNoFiguresPublished",
        }
        # A worker that stops is seen down (the alert itself waits 2 minutes: see the unit tests).
        worker.stop()
        wait_until(
            lambda: prometheus.query('up{job="cci-worker"}') == {labels: 0.0},
            30,
            "Prometheus never saw the stopped worker down",
        )
