"""``cci worker``: start the Faust worker for the configured app."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

from streams.logs import logging_config, quiet_repeats
from streams.redaction import install_log_redaction, redact_url
from streams.settings import Settings
from streams.worker import gc_policy as collector
from streams.worker.app import create_app

log = logging.getLogger("streams")

# Seconds from SIGTERM/SIGINT to exit at the latest. Without a broker nothing is left to commit,
# and Faust's own stop then waits on every client's timeouts (more than 85 s was measured).
STOP_DEADLINE_S = 25.0
STOP_DEADLINE_NO_BROKER_S = 5.0


def run_worker(settings: Settings) -> None:
    collector.configure()
    install_log_redaction(settings)
    app = create_app(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The broker watch starts before the app and stops after it: the stop deadline below depends
    # on its answer while the app stops.
    worker = app.conf.Worker(
        app,
        app.cci_broker_watch,  # type: ignore[attr-defined]
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_format, settings.log_level),
        quiet=True,
    )

    _stop_within_deadline(worker, lambda: bool(app.cci_broker_watch.up))  # type: ignore[attr-defined]

    @app.task
    async def announce() -> None:
        quiet_repeats()  # the handlers exist now: Faust set up logging before starting the app
        fields = {
            "broker": settings.kafka_bootstrap,
            "app_id": settings.app_id,
            "timezone": settings.timezone,
            "store": redact_url(settings.clickhouse_url),
            "retain_months": settings.retain_months,
            "partitions": settings.partitions,
            "web": f"http://{settings.web_host}:{settings.web_port}",
            "embedded_broker": settings.embedded_broker,
        }
        described = " ".join(f"{name}={value}" for name, value in fields.items())
        log.info("cci worker starting: %s", described, extra=fields)

    worker.execute_from_commandline()


def _stop_within_deadline(worker: Any, broker_up: Any) -> None:
    """Exit at most ``STOP_DEADLINE_S`` (``STOP_DEADLINE_NO_BROKER_S`` while the broker is
    unreachable) after the stop signal, whatever the graceful stop is waiting for."""
    schedule = worker._schedule_shutdown

    def schedule_with_deadline(sig: signal.Signals) -> None:
        if not worker._signal_stop_time:
            threading.Thread(target=_watchdog, args=(broker_up,), daemon=True).start()
        schedule(sig)

    worker._schedule_shutdown = schedule_with_deadline


def _watchdog(broker_up: Any) -> None:
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        deadline = STOP_DEADLINE_S if broker_up() else STOP_DEADLINE_NO_BROKER_S
        if elapsed >= deadline:
            break
        time.sleep(0.2)
    log.error(
        "the worker did not stop within %.0f s of the signal%s; exiting now (what it had not "
        "committed is read again at the next start)",
        elapsed,
        "" if broker_up() else " (the broker is unreachable)",
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(1)
