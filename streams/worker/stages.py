"""The dataflow stages as Faust agents and timers: deduplicate (and publish partials), aggregate
(and emit updates), and the republish after recovery. The rules live in ``streams/pipeline``;
these only move records between them, the tables and Kafka."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from streams import domain, metrics
from streams.pipeline.aggregate import all_segment_keys, merge_partial, segment_totals
from streams.pipeline.alerts import Figure
from streams.pipeline.deduplicate import PartitionState
from streams.pipeline.emit import update_key, update_value
from streams.pipeline.enrich import ActiveFact, decode_facts_record
from streams.pipeline.partitioning import partition_for
from streams.pipeline.records import dict_chunks
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, Settings
from streams.topics import internal_topic_names
from streams.worker import gc_policy as collector
from streams.worker.alert_publisher import AlertPublisher
from streams.worker.producer_watch import ProducerWatch
from streams.worker.tables import Runtime, Tables, month_slot

log = logging.getLogger("streams")

PARTIALS_INTERVAL = 0.05  # seconds between publishes of changed partial counts
RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


@dataclass
class Topics:
    """The topics the stages read and write (bytes in, bytes out)."""

    facts: Any
    partials: Any
    updates: Any
    alerts: Any
    partials_name: str


def create_topics(app: faust.App, settings: Settings) -> Topics:
    names = internal_topic_names(settings.app_id)
    partitions = settings.partitions
    return Topics(
        facts=app.topic(names["facts"], internal=True, partitions=partitions, **RAW),
        partials=app.topic(names["partials"], internal=True, partitions=partitions, **RAW),
        updates=app.topic(TOPIC_UPDATES, **RAW),
        alerts=app.topic(TOPIC_ALERTS, **RAW),
        partials_name=names["partials"],
    )


def add_stages(
    app: faust.App,
    runtime: Runtime,
    tables: Tables,
    topics: Topics,
    alerts: AlertPublisher,
    producer_watch: ProducerWatch,
) -> None:
    """Every agent and timer of the worker, and the republish after the tables are recovered."""
    add_deduplicate(app, runtime, tables, topics)
    add_aggregate(app, runtime, tables, topics, alerts)
    tables.dedup.on_recover(_republisher(app, runtime, tables, topics, alerts))

    @app.timer(1.0)
    async def watch_producer() -> None:
        producer_watch.sample()


def add_deduplicate(app: faust.App, runtime: Runtime, tables: Tables, topics: Topics) -> None:
    """The dedup agent (facts → changelog chunks) and the timer publishing changed partials."""
    settings = runtime.settings
    dimensions = domain.user_dimensions(settings.extra_dimensions)

    @app.agent(topics.facts, name="deduplicate")
    async def deduplicate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            partition, seq = event.message.partition, event.message.offset
            state = runtime.states.get(partition)
            if state is None:
                state = runtime.states[partition] = PartitionState(
                    dimensions, settings.max_segment_values
                )
            for key in state.expire(runtime.oldest_month()):
                tables.dedup.send_changelog(partition, key.encode(), None)
            facts = decode_facts_record(event.value)
            changed = state.apply(facts, seq)
            _count_repeats(facts, changed)
            for month, winners in changed.items():
                for key, value in state.encode_chunks(month, seq, winners):
                    tables.dedup.send_changelog(partition, key.encode(), value)

    @app.timer(PARTIALS_INTERVAL)
    async def publish_partials() -> None:
        if not runtime.ready:
            return
        # Standby copies (runtime.standbys) are never published from: only owned partitions.
        standbys = list(runtime.standbys.values())
        metrics.standby_user_months.set(sum(state.user_months() for state in standbys))
        published = False
        for partition, state in list(runtime.states.items()):
            for partial in state.drain_dirty():
                label = domain.month_label(partial.month)
                # Split to fit a record; only the first of a reset replaces what is held.
                for number, counts in enumerate(dict_chunks(partial.counts, overhead=200)):
                    body = {
                        "p": partition,
                        "seq": partial.seq,
                        "counts": counts,
                        "reset": partial.reset and number == 0,
                    }
                    await topics.partials.send(
                        key=label.encode(),
                        value=orjson.dumps(body),
                        partition=partition_for(label, settings.partitions),
                    )
                    metrics.partials_published.inc()
                published = True
            _report_guard(state, partition, settings.max_segment_values)
        if published:
            # Cheap (sampled) and only when the state changed, so the gauges are never stale.
            states = list(runtime.states.values())
            metrics.user_months.set(sum(state.user_months() for state in states))
            metrics.dedup_state_bytes.set(sum(state.estimated_bytes() for state in states))


def add_aggregate(
    app: faust.App, runtime: Runtime, tables: Tables, topics: Topics, alerts: AlertPublisher
) -> None:
    """The aggregate agent (partials → month table) and the timer emitting changed figures."""
    settings = runtime.settings

    @app.agent(topics.partials, name="aggregate")
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            label = event.key.decode("utf-8")
            tables.expire_months(event.message.partition, runtime)
            if domain.month_from_label(label) < runtime.oldest_month():
                continue
            body = orjson.loads(event.value)
            merged = merge_partial(
                tables.month_state(label),
                body["p"],
                body["seq"],
                body["counts"],
                reset=body.get("reset", False),
            )
            if merged is None:
                metrics.stale_partials.inc()
                continue
            state, touched = merged
            tables.months[month_slot(label, body["p"])] = state[str(body["p"])]
            runtime.pending_updates[label].update(touched)

    @app.timer(settings.emit_interval)
    async def emit_updates() -> None:
        if not runtime.ready or not alerts.ready:
            return
        _forget_expired_months(runtime, alerts)
        pending, runtime.pending_updates = runtime.pending_updates, defaultdict(set)
        now = runtime.clock.now()
        owned = _owned_partitions(app, topics.partials_name)
        for label, keys in pending.items():
            if partition_for(label, settings.partitions) not in owned:
                # The month moved to another worker in a rebalance: it publishes it now.
                continue
            state = tables.month_state(label)
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
                await topics.updates.send(key=key.encode(), value=orjson.dumps(value))
                metrics.updates_emitted.inc()
                figure = Figure(label, dimension, segment, tickets, active_users, value["cci"])
                await alerts.publish(figure, now)
                ratio = value["cci"]
                metrics.set_current_cci(
                    label, dimension, segment, float("nan") if ratio is None else ratio
                )


def _republisher(
    app: faust.App, runtime: Runtime, tables: Tables, topics: Topics, alerts: AlertPublisher
) -> Any:
    """What runs when the tables are recovered: the stages start again from what they hold."""

    async def on_recovered() -> None:
        # Republish everything this worker owns: a publish lost in a crash must not stay lost,
        # and republishing absolute figures is harmless.
        owned = _owned_partitions(app, topics.partials_name)
        runtime.pending_updates.clear()
        labels = {key.partition("#")[0] for key in tables.months if "#" in key}
        for label in labels:
            if partition_for(label, tables.partitions) in owned:
                state = tables.month_state(label)
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

    return on_recovered


def _owned_partitions(app: faust.App, topic: str) -> set[int]:
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}


def _report_guard(state: PartitionState, partition: int, max_values: int) -> None:
    """A metric and a log line each time the cardinality guard starts folding a dimension."""
    for month, dimension, values in state.guard_started:
        metrics.segment_guard_acted.labels(metrics.label_value(dimension)).inc()
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
    # map and count run in C: a generator per fact cost ~3% of the worker's main thread.
    seen_active = list(map(type, facts)).count(ActiveFact)
    won_active = sum(list(map(type, winners)).count(ActiveFact) for winners in changed.values())
    won = sum(len(winners) for winners in changed.values())
    metrics.repeat_facts.labels("active").inc(seen_active - won_active)
    metrics.repeat_facts.labels("ticket").inc(len(facts) - seen_active - (won - won_active))


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
