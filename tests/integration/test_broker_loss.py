"""Losing the broker: said once and plainly, visible on /health and /metrics, and never a hang.

The broker is the embedded one, stopped under a running worker; "an empty broker returns" is a new
embedded broker on the same port (its storage is memory: it has none of the topics or offsets).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import orjson

from streams.bench.measure import metric_values
from streams.dev.broker import LOOPBACK, EmbeddedBroker
from streams.dev.generate import generate
from streams.kafka.broker_watch import EXIT_BROKER_LOST_DATA
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, load_settings
from tests.integration.harness import (
    WorkerProcess,
    create_all_topics,
    produce,
    wait_for_figures,
    wait_until,
)

STOP_WITHIN_S = 10.0
OUTAGE_S = 15.0
# The log may grow by this much during the outage (aiokafka alone wrote ~36 KB a second).
OUTAGE_LOG_BYTES = 30_000


def health(worker: WorkerProcess) -> tuple[int | None, dict[str, object]]:
    url = f"http://{LOOPBACK}:{worker.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return None, {}


def broker_up(worker: WorkerProcess) -> float | None:
    return metric_values(worker.get("/metrics"), ["cci_broker_up"])["cci_broker_up"]


def test_sigterm_with_the_broker_gone_stops_the_worker_within_seconds(pipeline) -> None:
    worker = pipeline.worker()
    pipeline.broker.stop()
    time.sleep(3)  # the clients notice and start retrying
    started = time.monotonic()
    worker.stop(grace_s=60)
    took = time.monotonic() - started
    assert took < STOP_WITHIN_S, f"SIGTERM took {took:.1f} s\n{worker.log_tail()}"


def test_a_lost_broker_is_reported_and_its_errors_summarised(pipeline) -> None:
    worker = pipeline.worker()
    assert broker_up(worker) == 1.0
    logged_before = worker.log_path.stat().st_size
    pipeline.broker.stop()
    lost_at = time.monotonic()
    wait_until(lambda: health(worker)[0] == 503, 15, "/health still 200 without a broker")
    status, body = health(worker)
    assert status == 503 and "broker" in str(body.get("reason", "")), body
    assert broker_up(worker) == 0.0
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - lost_at)))
    grown = worker.log_path.stat().st_size - logged_before
    assert grown < OUTAGE_LOG_BYTES, f"{grown} bytes logged in {OUTAGE_S} s:\n{worker.log_tail()}"
    log = worker.log_tail(200)
    assert "broker unreachable" in log, log
    assert "similar lines suppressed" in log, log


def test_an_empty_broker_returning_stops_the_worker_with_what_to_do(pipeline) -> None:
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=60, months=1, seed=17, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected, workers=[worker])
    port = pipeline.broker.port
    pipeline.broker.stop()
    time.sleep(3)
    with EmbeddedBroker(port):  # same address, nothing in it
        wait_until(lambda: worker.exited() is not None, 40, "the worker carried on")
        assert worker.exited() not in (0, None), worker.log_tail()
        log = worker.log_tail(200)
        assert "the broker lost data" in log, log
        assert "docs/operations.md" in log, log


def test_a_worker_started_against_an_emptied_broker_stops_with_what_to_do(pipeline) -> None:
    """The store holds offsets the broker's topics no longer reach: the history went backwards."""
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=60, months=1, seed=19, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker("w")
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected, workers=[worker])
    time.sleep(3)  # the sink's last batch
    assert worker.stop() == 0
    port = pipeline.broker.port
    pipeline.broker.stop()
    with EmbeddedBroker(port) as empty:
        create_all_topics(empty.bootstrap)
        again = WorkerProcess(worker.env, worker.log_path).start()
        pipeline.workers.append(again)
        wait_until(lambda: again.exited() is not None, 90, "the worker carried on")
        assert again.exited() == EXIT_BROKER_LOST_DATA, again.log_tail()
        log = again.log_tail(200)
        assert "the broker lost data" in log and "docs/operations.md" in log, log
