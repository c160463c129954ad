"""Faust glue: topics, tables and agents wiring the dataflow stages together.

    user-activity ┐                                   ┌─ cci-dead-letters
    ticket-created┴─ ingest (validate + enrich) ──────┴─ {app}-facts (by user_id / ticket_id)
                     (a child process: aiokafka batches, own group;
    streams/worker/ingest_process.py) {app}-facts ──── deduplicate (PartitionState) ────
    {app}-partials (by month) {app}-partials ─ aggregate (month table) ── timer ─ cci-updates
    cci-updates + {app}-dedup-changelog ─ sink (own consumer group) ─ ClickHouse

The rules live in ``streams/pipeline``; this file composes the worker from named parts: its
tables (``tables.py``), stages (``stages.py``), web routes (``routes.py``) and the services
started and stopped with it (ingest, sink, broker watch, alert publisher, dashboard source).
"""

from __future__ import annotations

from typing import Any

import faust

from streams.clock import clock_for
from streams.kafka import embedded
from streams.kafka.broker_watch import BrokerWatch
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, TOPIC_UPDATES, Settings
from streams.sink.runner import SinkRunner
from streams.topics import changelog_topic, internal_topic_names
from streams.web.dashboard.source import DashboardSource
from streams.worker import delivery, positions
from streams.worker.alert_publisher import AlertPublisher
from streams.worker.ingest_process import IngestProcesses
from streams.worker.producer_watch import ProducerWatch
from streams.worker.recovery import RebuildingRecovery
from streams.worker.routes import add_data_routes, add_operations_routes, web_application_options
from streams.worker.stages import add_stages, create_topics
from streams.worker.tables import Runtime, create_tables


def create_app(settings: Settings) -> faust.App:
    """The Faust app with every topic, table, agent and web page of the pipeline."""
    app = _faust_app(settings)
    embedded.install(app, settings)
    delivery.install(app)  # an offset is committed only once what was sent before it is acked
    positions.install(app)  # a partition without a commit starts at its beginning, not past it
    # A stage's partition that stops moving with records past its commit is read again.
    names = internal_topic_names(settings.app_id)
    positions.watch_commits(app, [names["facts"], names["partials"]])
    runtime = Runtime(settings, clock=clock_for(settings))
    app.cci_runtime = runtime  # type: ignore[attr-defined]
    recovery = RebuildingRecovery(app, app.tables, beacon=app.tables.beacon, loop=app.loop)
    app.tables._recovery = recovery  # read through app.tables.recovery, created on first use
    producer_watch = ProducerWatch(buffer_size=lambda: app.producer.buffer.size)
    app.sensors.add(producer_watch)
    app.cci_producer_watch = producer_watch  # type: ignore[attr-defined]
    topics = create_topics(app, settings)
    alerts = AlertPublisher(settings, topics.alerts)
    tables = create_tables(app, runtime, recovery)
    # The ClickHouse sink has its own consumer group: it neither slows the stages nor needs them.
    sink = SinkRunner(settings)
    app.cci_sink = sink  # type: ignore[attr-defined]
    # The broker's presence for /health, and a broker that lost data stops the worker.
    broker = BrokerWatch(settings, _watched_topics(settings))
    app.cci_broker_watch = broker  # type: ignore[attr-defined]
    # Validate + enrich run in child processes (CCI_INGEST_PROCESSES) that write the facts topic.
    ingest = IngestProcesses(settings, names["facts"])
    app.cci_ingest = ingest  # type: ignore[attr-defined]
    # Every worker follows cci-updates and cci-alerts whole for its dashboard.
    dashboard = DashboardSource(settings)
    app.cci_dashboard = dashboard  # type: ignore[attr-defined]
    # Every background part is a mode.Service (streams/loops.py), started and stopped with the app;
    # the broker watch outlives it (streams/worker/run.py).
    for service in (alerts, sink, *ingest.processes, dashboard):
        app.service(service)

    add_stages(app, runtime, tables, topics, alerts, producer_watch)
    add_operations_routes(app, runtime, broker, ingest, alerts, producer_watch)
    add_data_routes(app, settings, sink, dashboard)
    return app


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")),
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        web_enabled=True,
        # Faust's own pages expose the cluster (/router/), table contents (/table/), sensors and
        # the service graph; the worker serves only its own (docs/security.md).
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_application_options=web_application_options(settings),
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_rebalance_timeout=max(settings.session_timeout, 10.0),
        producer_acks=-1,
        # Records sent within 5 ms share a request: fewer requests for the worker and the broker.
        producer_linger=0.005,
        **embedded.app_options(settings),
    )


def _watched_topics(settings: Settings) -> list[str]:
    names = internal_topic_names(settings.app_id)
    return [
        TOPIC_ACTIVITY,
        TOPIC_TICKETS,
        TOPIC_PROFILES,
        TOPIC_UPDATES,
        names["facts"],
        names["partials"],
        changelog_topic(settings.app_id),
    ]


def _broker_credentials(settings: Settings) -> Any:
    kwargs = settings.kafka_client_kwargs()
    protocol = kwargs["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return faust.SASLCredentials(
        username=kwargs["sasl_plain_username"],
        password=kwargs["sasl_plain_password"],
        mechanism=kwargs["sasl_mechanism"],
        ssl_context=kwargs.get("ssl_context"),
    )
