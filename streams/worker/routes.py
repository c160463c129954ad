"""The worker's web routes: operations (health, metrics, login) and data (query API, dashboard,
its JSON API and live stream, forecast). The handlers live in ``streams/web`` and
``streams/store/query.py``; the rules in front of every route are middlewares
(``web_application_options``)."""

from __future__ import annotations

from typing import Any

import faust

from streams import metrics
from streams.kafka.broker_watch import BrokerWatch
from streams.settings import Settings
from streams.sink.runner import SinkRunner
from streams.store import query
from streams.web import auth as web_auth
from streams.web import forecast as forecast_web
from streams.web import guard as web_guard
from streams.web.dashboard import web as dashboard_web
from streams.web.dashboard.source import DashboardSource
from streams.worker.alert_publisher import AlertPublisher
from streams.worker.ingest_process import IngestProcesses
from streams.worker.producer_watch import PRODUCER_STALL_SECONDS, ProducerWatch
from streams.worker.tables import Runtime


def web_hosts(settings: Settings) -> frozenset[str]:
    """The Host header values that name this worker (streams/web/guard.py)."""
    return web_guard.allowed_hosts(settings.web_host, settings.web_port, settings.web_allowed_hosts)


def web_application_options(settings: Settings) -> dict[str, Any]:
    """aiohttp's options: the Host/Origin guard, and the token check when CCI_WEB_TOKEN is set,
    in front of every page but /health, /metrics and /login (streams/web/auth.py)."""
    return {"middlewares": web_auth.middlewares(settings.web_token, web_hosts(settings))}


def add_operations_routes(
    app: faust.App,
    runtime: Runtime,
    broker: BrokerWatch,
    ingest: IngestProcesses,
    alerts: AlertPublisher,
    producer_watch: ProducerWatch,
) -> None:
    """/health, /metrics and the login page: open to every caller (no token, no Host guard)."""

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        if not broker.up:
            return web.json({"status": "unavailable", "reason": broker.reason}, status=503)
        healthy = (
            runtime.ready
            and not app.rebalancing
            and app.tables.recovery.completed.is_set()
            and bool(app.consumer.assignment())
            and ingest.healthy
            and alerts.ready
        )
        problems = [ingest.problem] if ingest.problem else []
        if producer_watch.stalled():
            problems.append(
                "producer stalled: a record has waited to be sent for longer than "
                f"{PRODUCER_STALL_SECONDS:.0f} s"
            )
        body: dict[str, Any] = {
            "status": "ok" if healthy and not problems else "failing" if problems else "starting",
            "partitions": len(app.consumer.assignment()),
        }
        if problems:
            body["problems"] = problems
        return web.json(body, status=200 if healthy and not problems else 503)

    token = runtime.settings.web_token

    @app.page(web_auth.LOGIN_PATH)
    class LoginPage(faust.web.View):  # type: ignore[misc]
        """The browser's way to give CCI_WEB_TOKEN (streams/web/auth.py)."""

        async def get(self, request: Any) -> Any:
            return await web_auth.answer_login(request, token)

        async def post(self, request: Any) -> Any:
            return await web_auth.answer_login(request, token)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )


def add_data_routes(
    app: faust.App, settings: Settings, sink: SinkRunner, dashboard: DashboardSource
) -> None:
    """The query API, the dashboard with its API and live stream, and the forecast."""
    hosts = web_hosts(settings)

    @app.page(query.QUERY_PATH)
    class QueryPage(faust.web.View):  # type: ignore[misc]
        """Read-only SQL on the worker's store: the embedded engine is this process's alone."""

        async def post(self, request: Any) -> Any:
            answer = await query.answer_request(request, sink.store, settings.clickhouse_url, hosts)
            return self.bytes(answer.body, content_type="application/json", status=answer.status)

    @app.page(dashboard_web.PAGE_PATH)
    async def dashboard_page(web: Any, request: Any) -> Any:
        return dashboard_web.page()

    @app.page(dashboard_web.STATIC_PATH)
    async def dashboard_static(web: Any, request: Any, name: str) -> Any:
        return dashboard_web.static_file(name)

    @app.page(dashboard_web.API_CCI_PATH)
    async def api_cci(web: Any, request: Any) -> Any:
        return dashboard_web.api_answer(request, dashboard.view.api_cci, dashboard.clock.now())

    @app.page(dashboard_web.API_HISTORY_PATH)
    async def api_cci_history(web: Any, request: Any) -> Any:
        return dashboard_web.api_answer(request, dashboard.view.api_history, dashboard.clock.now())

    @app.page(dashboard_web.API_ALERTS_PATH)
    async def api_alerts(web: Any, request: Any) -> Any:
        return dashboard_web.api_answer(request, dashboard.view.api_alerts, dashboard.clock.now())

    @app.page(dashboard_web.API_STREAM_PATH)
    async def api_stream(web: Any, request: Any) -> Any:
        return await dashboard_web.live_stream(request, dashboard)

    @app.page(forecast_web.API_FORECAST_PATH)
    async def api_forecast(web: Any, request: Any) -> Any:
        return await forecast_web.forecast_answer(request, settings, sink.store)
