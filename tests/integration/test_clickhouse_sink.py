"""The sink against a real broker and the real ClickHouse engine, with ClickHouse failing:
retries are counted, offsets are committed only after ClickHouse has the rows, and in the end
every row is there exactly once (FINAL, and count() after OPTIMIZE … FINAL)."""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import domain, metrics
from streams.dev.broker import EmbeddedBroker
from streams.dev.produce import produce_records
from streams.kafka.admin import TopicSpec, create_topics
from streams.settings import Settings, load_settings
from streams.sink.runner import SinkRunner, sink_group
from streams.store.clickhouse import Store, StoreError, open_store

PARTITIONS = 2
DIMENSIONS = domain.user_dimensions(())  # plan, product, region, tenure


class FlakyStore:
    """A real store whose inserts fail for a while, the way an unreachable or struggling server
    does: ``refuse`` inserts fail before ClickHouse sees them; then ``lose_answers`` inserts
    reach ClickHouse but the answer is lost (the sink must retry without doubling rows)."""

    def __init__(self, store: Store, refuse: int = 0, lose_answers: int = 0) -> None:
        self.store = store
        self.refuse = refuse
        self.lose_answers = lose_answers
        self.failures = 0

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> int:
        if self.refuse > 0:
            self.refuse -= 1
            self.failures += 1
            raise StoreError("Connection refused (injected)")
        written = self.store.insert(table, rows, columns)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            self.failures += 1
            raise StoreError("Read timed out (injected; the server has the rows)")
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _updates(rng: random.Random, keys: int, versions: int) -> tuple[list[bytes], dict]:
    """cci-updates values, several versions per key, shuffled; and the newest per key."""
    values, newest = [], {}
    for k in range(keys):
        month = f"2026-0{1 + k % 3}"
        segment = f"s{k}"
        for version in range(1, versions + 1):
            tickets, users = rng.randint(0, 50), rng.randint(0, 30)
            value = {
                "month": month,
                "dimension": "plan",
                "segment": segment,
                "tickets": tickets,
                "active_users": users,
                "cci": domain.cci(tickets, users),
                "contact_rate_pct": domain.contact_rate_pct(tickets, users),
                "version": 1_770_000_000_000_000 + version,
                "emitted_at": "2026-03-01T00:00:00.000Z",
            }
            values.append(orjson.dumps(value))
            newest[(month, segment)] = (tickets, users, value["version"])
    rng.shuffle(values)
    return values, newest


def _chunks(rng: random.Random, users: int) -> tuple[list[tuple[bytes, bytes | None]], dict, dict]:
    """Changelog chunks with several versions per user-month and ticket (the winner, earliest
    time, possibly written first), a tombstone; and the expected winners."""
    records: list[tuple[bytes, bytes | None]] = []
    active: dict[tuple[str, str], tuple[int, str]] = {}
    tickets: dict[str, tuple[int, str]] = {}
    seq = 0
    for u in range(users):
        for version in range(3):
            seq += 1
            ts = rng.randint(1, 10**9)
            plan = rng.choice(["free", "paid", "vip"])
            attributes = [plan, "docs", "eu", "new"]
            ticket_id = f"t{u}"
            # Mostly today's chunks (inserted whole, unpacked by the store's views); every
            # tenth written before tickets carried their user (rows built by the sink).
            user = [] if seq % 10 == 0 else [f"u{u}"]
            body = {
                "seq": seq,
                "a": [[f"u{u}", ts, attributes]],
                "t": [[ticket_id, ts + version, [*attributes, "email"], *user]],
            }
            records.append((f"2026-02@{seq}".encode(), orjson.dumps(body)))
            key = ("2026-02-01", f"u{u}")
            if key not in active or (ts, plan) < active[key]:
                active[key] = (ts, plan)
            if ticket_id not in tickets or (ts + version, plan) < tickets[ticket_id]:
                tickets[ticket_id] = (ts + version, plan)
    records.append((b"2025-01@1", None))  # an expired month's tombstone: nothing to write
    rng.shuffle(records)
    return records, active, tickets


async def _committed(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=sink_group(settings)
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def _end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``predicate`` (plain or async) until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _retries() -> float:
    return sum(
        metrics.registry.get_sample_value("cci_sink_retries_total", {"table": table}) or 0.0
        for table in (
            "cci_segment_monthly",
            "cci_changelog_chunks",
            "cci_monthly_active_users",
            "cci_tickets",
        )
    )


async def test_failing_clickhouse_is_retried_and_no_row_is_lost_or_doubled(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    rng = random.Random(5)
    updates_topic, changelog = make_topic_name("updates"), make_topic_name("changelog")
    topics = [updates_topic, changelog]
    await create_topics(broker.bootstrap, {t: TopicSpec(PARTITIONS) for t in topics})
    updates, newest = _updates(rng, keys=120, versions=4)
    chunks, active, tickets = _chunks(rng, users=150)
    half = len(updates) // 2
    await produce_records(
        broker.bootstrap,
        updates_topic,
        [(None, v) for v in updates[:half]],
        one_record_batches=True,
    )
    await produce_records(broker.bootstrap, changelog, chunks, one_record_batches=True)
    settings = load_settings(
        {
            "CCI_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CCI_APP_ID": make_topic_name("app"),
            "CCI_CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
            "CCI_SINK_BATCH_ROWS": "100",
            "CCI_SINK_FLUSH_SECONDS": "0.2",
            "CCI_SESSION_TIMEOUT": "6",
        }
    )

    def runner(store_factory: Callable[[str], Any]) -> SinkRunner:
        return SinkRunner(
            settings,
            store_factory=store_factory,
            updates_topic=updates_topic,
            changelog=changelog,
            backoff_initial=0.05,
            backoff_max=0.2,
        )

    # 1. ClickHouse never answers: the sink retries, commits nothing, and gives up on stop.
    down = runner(lambda url: FlakyStore(open_store(url), refuse=10**9))
    await down.start()
    await asyncio.wait_for(down.ready.wait(), 60)
    await _wait(lambda: _retries() >= 3, 30, "retries while ClickHouse is down")
    await down.stop()
    assert set((await _committed(settings, topics)).values()) == {0}

    # 2. A restart with a flaky ClickHouse: refused inserts, then one that the server wrote but
    # whose answer was lost. Everything read before is read again (it was never confirmed).
    retries_before = _retries()
    flaky: list[FlakyStore] = []

    def flaky_store(url: str) -> FlakyStore:
        flaky.append(FlakyStore(open_store(url), refuse=3, lose_answers=2))
        return flaky[-1]

    sink = runner(flaky_store)
    await sink.start()
    await asyncio.wait_for(sink.ready.wait(), 60)
    # The other half arrives while the sink runs.
    await produce_records(
        broker.bootstrap,
        updates_topic,
        [(None, v) for v in updates[half:]],
        one_record_batches=True,
    )
    end = await _end_offsets(broker.bootstrap, topics)

    async def all_committed() -> bool:
        return await _committed(settings, topics) == end

    await _wait(all_committed, 60, "every offset committed")
    store = sink.store
    assert store is not None

    segments = store.query(
        "SELECT month, segment, tickets, active_users, version FROM cci_segment_monthly FINAL"
    ).rows
    assert {(str(m)[:7], s): (t, u, v) for m, s, t, u, v in segments} == newest
    users = store.query(
        "SELECT month, user_id, toUnixTimestamp64Micro(active_at), plan "
        "FROM cci_monthly_active_users FINAL"
    ).rows
    assert {(str(m), u): (ts, plan) for m, u, ts, plan in users} == active
    ticket_rows = store.query(
        "SELECT ticket_id, toUnixTimestamp64Micro(created_at), plan FROM cci_tickets FINAL"
    ).rows
    assert {t: (ts, plan) for t, ts, plan in ticket_rows} == tickets
    assert flaky[0].failures == 5
    assert _retries() - retries_before == 5
    assert (metrics.registry.get_sample_value("cci_sink_batches_total") or 0) > 0

    # No duplicates left once ClickHouse merges (the rows FINAL hides are versions, not copies).
    for table in ("cci_segment_monthly", "cci_monthly_active_users", "cci_tickets"):
        await asyncio.to_thread(store.command, f"OPTIMIZE TABLE {table} FINAL")
    counts = [
        store.query(f"SELECT count() FROM {table}").rows[0][0]
        for table in ("cci_segment_monthly", "cci_monthly_active_users", "cci_tickets")
    ]
    assert counts == [len(newest), len(active), len(tickets)]
    await sink.stop()
