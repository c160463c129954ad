"""``cci worker``: start the Faust worker for the configured app."""

from __future__ import annotations

import logging

from streams.app import create_app
from streams.settings import Settings

log = logging.getLogger("streams")


def run_worker(settings: Settings) -> None:
    app = create_app(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = app.Worker(loglevel=settings.log_level, quiet=True)

    @app.task
    async def announce() -> None:
        log.info(
            "cci worker starting: broker=%s app_id=%s timezone=%s store=%s retain_months=%d "
            "partitions=%d web=http://%s:%d embedded_broker=%s",
            settings.kafka_bootstrap,
            settings.app_id,
            settings.timezone,
            _redact(settings.clickhouse_url),
            settings.retain_months,
            settings.partitions,
            settings.web_host,
            settings.web_port,
            settings.embedded_broker,
        )

    worker.execute_from_commandline()


def _redact(url: str) -> str:
    """Hide a password in user:pass@host URLs before logging."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
