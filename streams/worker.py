"""``cci worker``: start the Faust worker for the configured app."""

from __future__ import annotations

import logging

from streams import collector
from streams.app import create_app
from streams.logs import logging_config
from streams.redaction import install_log_redaction, redact_url
from streams.settings import Settings

log = logging.getLogger("streams")


def run_worker(settings: Settings) -> None:
    collector.configure()
    install_log_redaction(settings)
    app = create_app(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = app.Worker(
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_format, settings.log_level),
        quiet=True,
    )

    @app.task
    async def announce() -> None:
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
