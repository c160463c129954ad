"""Faust glue: topics, tables and agents wiring the dataflow stages together.

    user-activity ┐                                   ┌─ cci-dead-letters
    ticket-created┴─ ingest (validate + enrich) ──────┴─ {app}-facts (by user_id / ticket_id)
                     (a child process: aiokafka batches, own group;
    streams/worker/ingest_process.py) {app}-facts ──── deduplicate (PartitionState) ────
    {app}-partials (by month) {app}-partials ─ aggregate (month table) ── timer ─ cci-updates
    cci-updates + {app}-dedup-changelog ─ sink (own consumer group) ─ ClickHouse

The rules live in the stage modules; this file only moves records between them and Kafka.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
import orjson
from faust.types import TP, EventT

from streams import domain, metrics
from streams.kafka import embedded
from streams.kafka.broker_watch import BrokerWatch
from streams.pipeline.aggregate import (
    MonthPartials,
    all_segment_keys,
    merge_partial,
    segment_totals,
)
from streams.pipeline.alerts import Figure
from streams.pipeline.deduplicate import PartitionState
from streams.pipeline.emit import Versions, update_key, update_value
from streams.pipeline.enrich import ActiveFact, decode_facts
from streams.pipeline.partitioning import partition_for
from streams.pipeline.records import dict_chunks
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_ALERTS,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    Settings,
)
from streams.sink.runner import SinkRunner
from streams.store import query
from streams.topics import changelog_topic, internal_topic_names
from streams.web import auth as web_auth
from streams.web import forecast as forecast_web
from streams.web import guard as web_guard
from streams.web.dashboard import web as dashboard_web
from streams.web.dashboard.source import DashboardSource
from streams.worker import gc_policy as collector
from streams.worker.alert_publisher import AlertPublisher
from streams.worker.ingest_process import IngestProcess
from streams.worker.producer_watch import PRODUCER_STALL_SECONDS, ProducerWatch
from streams.worker.recovery import RebuildingRecovery

log = logging.getLogger("streams")

PARTIALS_INTERVAL = 0.1  # seconds between publishes of changed partial counts


@dataclass
class Runtime:
    """Worker state that is not in a Faust table (rebuilt from the tables on recovery)."""

    settings: Settings
    states: dict[int, PartitionState] = field(default_factory=dict)
    ready: bool = False  # tables recovered since the last rebalance
    pending_updates: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    versions: Versions = field(default_factory=Versions)
    forgotten_before: int = 0  # months before this have had their bookkeeping dropped

    def oldest_month(self) -> int:
        return domain.oldest_retained_month(
            datetime.now(UTC), self.settings.zone, self.settings.retain_months
        )


class DedupTable(faust.Table):
    """Changelog of the dedup stage, folded straight into ``PartitionState`` on recovery.

    The stage writes chunks with ``send_changelog`` itself; the Faust store holds nothing, so the
    state lives once in memory (as the per-partition index) instead of twice.
    """

    runtime: Runtime

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        oldest = self.runtime.oldest_month()
        dimensions = domain.user_dimensions(self.runtime.settings.extra_dimensions)
        for event in batch:
            partition = event.message.partition
            state = self.runtime.states.get(partition)
            if state is None:
                state = self.runtime.states[partition] = PartitionState(
                    dimensions, self.runtime.settings.max_segment_values
                )
            value = None if event.value is None else orjson.loads(event.value)
            state.apply_chunk(event.key.decode("utf-8"), value, oldest)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        self.runtime.ready = False
        changelog = self.changelog_topic.get_topic_name()
        # A partition we give up, or get (back), is rebuilt from its changelog from the start.
        for tp in revoked | newly_assigned:
            if tp.topic == changelog:
                self.runtime.states.pop(tp.partition, None)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


def create_app(settings: Settings) -> faust.App:
    """The Faust app with every topic, table, agent and web page of the pipeline."""
    partitions = settings.partitions
    app = faust.App(
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
        web_application_options=_web_application_options(settings),
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_rebalance_timeout=max(settings.session_timeout, 10.0),
        producer_acks=-1,
        **embedded.app_options(settings),
    )
    embedded.install(app, settings)
    runtime = Runtime(settings)
    app.cci_runtime = runtime  # type: ignore[attr-defined]
    recovery = RebuildingRecovery(app, app.tables, beacon=app.tables.beacon, loop=app.loop)
    app.tables._recovery = recovery  # read through app.tables.recovery, created on first use
    producer_watch = ProducerWatch(buffer_size=lambda: app.producer.buffer.size)
    app.sensors.add(producer_watch)
    app.cci_producer_watch = producer_watch  # type: ignore[attr-defined]
    names = internal_topic_names(settings.app_id)
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    facts_topic = app.topic(names["facts"], internal=True, partitions=partitions, **raw)
    partials_topic = app.topic(names["partials"], internal=True, partitions=partitions, **raw)
    updates_topic = app.topic(TOPIC_UPDATES, **raw)
    alerts = AlertPublisher(settings, app.topic(TOPIC_ALERTS, **raw))

    dedup_table = DedupTable(
        app,
        name="dedup",
        beacon=app.tables.beacon,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        help="Winning facts per user-month and ticket, as chunks per (month, facts offset)",
    )
    dedup_table.runtime = runtime
    dedup_changelog = dedup_table.changelog_topic.get_topic_name()
    # The dedup state lives outside Faust's store: a rebuilt partition starts from nothing.
    recovery.drop_state = lambda tp: (
        runtime.states.pop(tp.partition, None) if tp.topic == dedup_changelog else None
    )
    app.tables.add(dedup_table)
    month_table = app.Table(
        "month-partials",
        partitions=partitions,
        help="Latest partial counts of every facts partition, per month (key month#partition)",
    )

    def month_state(label: str) -> MonthPartials:
        """The month's partials of every facts partition (one table record each, so that a
        record stays as small as one partition's counts)."""
        state: MonthPartials = {}
        for part in range(partitions):
            held = month_table.get(month_slot(label, part))
            if held:
                state[str(part)] = held
        return state

    dimensions = domain.user_dimensions(settings.extra_dimensions)

    app.service(_service_running(alerts))

    # The ClickHouse sink has its own consumer group: it neither slows the stages nor needs them.
    sink = SinkRunner(settings)
    app.cci_sink = sink  # type: ignore[attr-defined]

    app.service(_service_running(sink))

    # --- validate + enrich ---------------------------------------------------------------------

    # The broker's presence for /health, and a broker that lost data stops the worker.
    watched = [
        TOPIC_ACTIVITY,
        TOPIC_TICKETS,
        TOPIC_PROFILES,
        TOPIC_UPDATES,
        names["facts"],
        names["partials"],
        changelog_topic(settings.app_id),
    ]
    broker = BrokerWatch(settings, watched)
    app.cci_broker_watch = broker  # type: ignore[attr-defined]
    app.service(_service_running(broker))

    ingest = IngestProcess(settings, names["facts"])
    app.cci_ingest = ingest  # type: ignore[attr-defined]

    app.service(_service_running(ingest))

    # --- deduplicate ---------------------------------------------------------------------------

    @app.agent(facts_topic, name="deduplicate")
    async def deduplicate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            partition, seq = event.message.partition, event.message.offset
            state = runtime.states.get(partition)
            if state is None:
                state = runtime.states[partition] = PartitionState(
                    dimensions, settings.max_segment_values
                )
            for key in state.expire(runtime.oldest_month()):
                dedup_table.send_changelog(partition, key.encode(), None)
            facts = decode_facts(orjson.loads(event.value))
            changed = state.apply(facts, seq)
            _count_repeats(facts, changed)
            for month, winners in changed.items():
                for key, value in state.encode_chunks(month, seq, winners):
                    dedup_table.send_changelog(partition, key.encode(), value)

    @app.timer(PARTIALS_INTERVAL)
    async def publish_partials() -> None:
        if not runtime.ready:
            return
        published = False
        for partition, state in list(runtime.states.items()):
            for partial in state.drain_dirty():
                label = domain.month_label(partial.month)
                # Split to fit a record; only the first of a reset replaces what is held.
                for number, counts in enumerate(dict_chunks(partial.counts, overhead=200)):
                    body = {
                        "p": partition,
                        "seq": state.applied_seq,
                        "counts": counts,
                        "reset": partial.reset and number == 0,
                    }
                    await partials_topic.send(
                        key=label.encode(),
                        value=orjson.dumps(body),
                        partition=partition_for(label, partitions),
                    )
                    metrics.partials_published.inc()
                published = True
            _report_guard(state, partition, settings.max_segment_values)
        if published:
            # Cheap (sampled) and only when the state changed, so the gauges are never stale.
            states = list(runtime.states.values())
            metrics.user_months.set(sum(state.user_months() for state in states))
            metrics.dedup_state_bytes.set(sum(state.estimated_bytes() for state in states))

    # --- aggregate -----------------------------------------------------------------------------

    @app.agent(partials_topic, name="aggregate")
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            label = event.key.decode("utf-8")
            _expire_months(month_table, event.message.partition, runtime)
            if domain.month_from_label(label) < runtime.oldest_month():
                continue
            body = orjson.loads(event.value)
            merged = merge_partial(
                month_state(label),
                body["p"],
                body["seq"],
                body["counts"],
                reset=body.get("reset", False),
            )
            if merged is None:
                metrics.stale_partials.inc()
                continue
            state, touched = merged
            month_table[month_slot(label, body["p"])] = state[str(body["p"])]
            runtime.pending_updates[label].update(touched)

    @app.timer(settings.emit_interval)
    async def emit_updates() -> None:
        if not runtime.ready or not alerts.ready:
            return
        _forget_expired_months(runtime, alerts)
        pending, runtime.pending_updates = runtime.pending_updates, defaultdict(set)
        now = datetime.now(UTC)
        owned = _owned_partitions(app, names["partials"])
        for label, keys in pending.items():
            if partition_for(label, partitions) not in owned:
                # The month moved to another worker in a rebalance: it publishes it now.
                continue
            state = month_state(label)
            if not state:
                continue
            month = domain.month_from_label(label)
            for segment_key, (tickets, active_users) in segment_totals(state, keys).items():
                dimension, _, segment = segment_key.partition("|")
                key = update_key(month, dimension, segment)
                version = runtime.versions.next(key, now)
                value = update_value(
                    month,
                    dimension,
                    segment,
                    tickets,
                    active_users,
                    version,
                    now,
                    target=settings.target_range,
                )
                await updates_topic.send(key=key.encode(), value=orjson.dumps(value))
                metrics.updates_emitted.inc()
                figure = Figure(label, dimension, segment, tickets, active_users, value["cci"])
                await alerts.publish(figure, now)
                ratio = value["cci"]
                metrics.set_current_cci(
                    label, dimension, segment, float("nan") if ratio is None else ratio
                )

    # --- recovery ------------------------------------------------------------------------------

    async def on_recovered() -> None:
        # Republish everything this worker owns: a publish lost in a crash must not stay lost,
        # and republishing absolute figures is harmless.
        owned = _owned_partitions(app, names["partials"])
        runtime.pending_updates.clear()
        labels = {key.partition("#")[0] for key in month_table if "#" in key}
        for label in labels:
            if partition_for(label, partitions) in owned:
                state = month_state(label)
                if state:
                    runtime.pending_updates[label].update(all_segment_keys(state))
        for state in runtime.states.values():
            state.mark_all_dirty()
        alerts.catch_up()  # judge the republished figures against every state published so far
        collector.freeze_survivors()  # the heap was just rebuilt: keep full collections short
        runtime.ready = True
        log.info(
            "recovered: %d facts partitions, %d user-months, %d months of partials",
            len(runtime.states),
            sum(s.user_months() for s in runtime.states.values()),
            len(runtime.pending_updates),
        )

    dedup_table.on_recover(on_recovered)

    @app.timer(1.0)
    async def watch_producer() -> None:
        producer_watch.sample()

    # --- web -----------------------------------------------------------------------------------

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

    @app.page(web_auth.LOGIN_PATH)
    class LoginPage(faust.web.View):  # type: ignore[misc]
        """The browser's way to give CCI_WEB_TOKEN (streams/web/auth.py)."""

        async def get(self, request: Any) -> Any:
            return await web_auth.answer_login(request, settings.web_token)

        async def post(self, request: Any) -> Any:
            return await web_auth.answer_login(request, settings.web_token)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    web_hosts = _web_hosts(settings)

    @app.page(query.QUERY_PATH)
    class QueryPage(faust.web.View):  # type: ignore[misc]
        """Read-only SQL on the worker's store: the embedded engine is this process's alone."""

        async def post(self, request: Any) -> Any:
            answer = await query.answer_request(
                request, sink.store, settings.clickhouse_url, web_hosts
            )
            return self.bytes(answer.body, content_type="application/json", status=answer.status)

    # --- dashboard: every worker follows cci-updates and cci-alerts whole ----------------------

    dashboard = DashboardSource(settings)
    app.cci_dashboard = dashboard  # type: ignore[attr-defined]

    app.service(_service_running(dashboard))

    @app.page(dashboard_web.PAGE_PATH)
    async def dashboard_page(web: Any, request: Any) -> Any:
        return dashboard_web.page()

    @app.page(dashboard_web.STATIC_PATH)
    async def dashboard_static(web: Any, request: Any, name: str) -> Any:
        return dashboard_web.static_file(name)

    # The Host/Origin guard in front of these routes is a middleware (_web_application_options).

    @app.page(dashboard_web.API_CCI_PATH)
    async def api_cci(web: Any, request: Any) -> Any:
        return dashboard_web.api_answer(request, dashboard.view.api_cci)

    @app.page(dashboard_web.API_HISTORY_PATH)
    async def api_cci_history(web: Any, request: Any) -> Any:
        return dashboard_web.api_answer(request, dashboard.view.api_history)

    @app.page(dashboard_web.API_ALERTS_PATH)
    async def api_alerts(web: Any, request: Any) -> Any:
        return dashboard_web.api_answer(request, dashboard.view.api_alerts)

    @app.page(dashboard_web.API_STREAM_PATH)
    async def api_stream(web: Any, request: Any) -> Any:
        return await dashboard_web.live_stream(request, dashboard)

    @app.page(forecast_web.API_FORECAST_PATH)
    async def api_forecast(web: Any, request: Any) -> Any:
        return await forecast_web.forecast_answer(request, settings, sink.store)

    return app


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _service_running(part: Startable) -> type[faust.Service]:
    """A Faust service, named after ``part``, that starts it with the worker and stops it."""

    async def on_start(self: faust.Service) -> None:
        await part.start()

    async def on_stop(self: faust.Service) -> None:
        await part.stop()

    # Built with type() so mode registers the service under its own name.
    name = f"{type(part).__name__}Service"
    return type(name, (faust.Service,), {"on_start": on_start, "on_stop": on_stop})


def _owned_partitions(app: faust.App, topic: str) -> set[int]:
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}


def month_slot(label: str, facts_partition: int) -> str:
    """Key of one facts partition's partials of a month in the month table."""
    return f"{label}#{facts_partition}"


def _report_guard(state: PartitionState, partition: int, max_values: int) -> None:
    """A metric and a log line each time the cardinality guard starts folding a dimension."""
    for month, dimension, values in state.guard_started:
        metrics.segment_guard_acted.labels(dimension).inc()
        log.warning(
            "cardinality guard: %s of %s has %d distinct values in facts partition %d; beyond "
            "the %d smallest they count as segment %r (CCI_MAX_SEGMENT_VALUES, docs/limits.md)",
            dimension,
            domain.month_label(month),
            values,
            partition,
            max_values,
            domain.OTHER,
        )
    state.guard_started.clear()


def _count_repeats(facts: list[Any], changed: dict[int, list[Any]]) -> None:
    """Facts that changed nothing are repeats: resends, duplicates, further activity."""
    won = Counter(isinstance(f, ActiveFact) for winners in changed.values() for f in winners)
    seen = Counter(isinstance(f, ActiveFact) for f in facts)
    metrics.repeat_facts.labels("active").inc(seen[True] - won[True])
    metrics.repeat_facts.labels("ticket").inc(seen[False] - won[False])


def _forget_expired_months(runtime: Runtime, alerts: AlertPublisher) -> None:
    """Drop versions, gauges and alert states of months past retention, once per month: without
    it they grow by every segment each month, and the worker's memory with them."""
    oldest = runtime.oldest_month()
    if oldest <= runtime.forgotten_before:
        return
    oldest_label = domain.month_label(oldest)
    for key in runtime.versions.forget(lambda key: key.split("|", 1)[0] < oldest_label):
        month, dimension, segment = key.split("|", 2)
        metrics.forget_current_cci(month, dimension, segment)
    alerts.forget_months_before(oldest_label)
    runtime.forgotten_before = oldest


def _expire_months(month_table: Any, partition: int, runtime: Runtime) -> None:
    """Delete expired months of this partition (inside stream iteration, as Faust requires)."""
    oldest = runtime.oldest_month()
    partitions = runtime.settings.partitions
    # Keys are month#partition (and plain months, written before the month was split).
    for key in [k for k in month_table if domain.month_from_label(k.partition("#")[0]) < oldest]:
        if partition_for(key.partition("#")[0], partitions) == partition:
            del month_table[key]


def _web_hosts(settings: Settings) -> frozenset[str]:
    return web_guard.allowed_hosts(settings.web_host, settings.web_port, settings.web_allowed_hosts)


def _web_application_options(settings: Settings) -> dict[str, Any]:
    """aiohttp's options: the Host/Origin guard, and the token check when CCI_WEB_TOKEN is set,
    in front of every page but /health, /metrics and /login (streams/web/auth.py)."""
    return {"middlewares": web_auth.middlewares(settings.web_token, _web_hosts(settings))}


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
