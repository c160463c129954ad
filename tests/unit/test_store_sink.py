"""The sink's batching rules (add / due / discard / flush) with an in-memory stand-in for the
store. The same sink against the real engine and broker: integration/test_clickhouse_sink.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from streams import domain, metrics
from streams.settings import load_settings
from streams.sink.batch import ClickHouseSink, SinkStopped
from streams.sink.rows import ACTIVE_TABLE, CHUNKS_TABLE, SEGMENT_TABLE, TICKET_TABLE, FactRows
from streams.sink.runner import sink_group
from streams.store.clickhouse import StoreError

UPDATES, CHANGELOG = "cci-updates", "cci-dedup-changelog"


class RecordingStore:
    """Keeps what it is given; refuses the first ``refuse`` inserts."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.inserts: list[tuple[str, list[Any]]] = []

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> int:
        if self.refuse:
            self.refuse -= 1
            raise StoreError("Connection refused")
        self.inserts.append((table, list(rows)))
        return len(rows)


def _sink(
    store: RecordingStore, batch_rows: int = 100, flush_seconds: float = 60.0
) -> ClickHouseSink:
    return ClickHouseSink(
        lambda: store,  # type: ignore[arg-type,return-value]
        domain.user_dimensions(()),
        updates_topic=UPDATES,
        changelog_topic=CHANGELOG,
        batch_rows=batch_rows,
        flush_seconds=flush_seconds,
        backoff_initial=0.001,
        backoff_max=0.002,
    )


def _update(segment: str) -> bytes:
    return orjson.dumps(
        {
            "month": "2026-01",
            "dimension": "plan",
            "segment": segment,
            "tickets": 1,
            "active_users": 2,
            "cci": 0.5,
            "contact_rate_pct": 50.0,
            "version": 1,
            "emitted_at": "2026-01-01T00:00:00.000Z",
        }
    )


def _chunk(users: int, tickets: int, *, ticket_users: bool = False) -> bytes:
    """A changelog chunk; tickets carry their user only with ``ticket_users`` (as written
    before version 3 of the schema: such chunks become rows in the sink, not in the store)."""
    attributes = ["free", "docs", "eu", "new"]
    user = ["u0"] if ticket_users else []
    return orjson.dumps(
        {
            "seq": 1,
            "a": [[f"u{i}", i, attributes] for i in range(users)],
            "t": [[f"t{i}", i, [*attributes, "web"], *user] for i in range(tickets)],
        }
    )


async def test_flush_writes_every_table_and_returns_the_offsets_to_commit() -> None:
    store = RecordingStore()
    sink = _sink(store)
    sink.add(UPDATES, 0, 10, b"k", _update("free"))
    sink.add(UPDATES, 0, 11, b"k", _update("paid"))
    sink.add(CHANGELOG, 3, 5, b"2026-01@9", _chunk(users=2, tickets=1))
    sink.add(CHANGELOG, 3, 6, b"2026-01@10", None)  # tombstone: no rows, but committed

    offsets = await sink.flush()

    assert offsets == {TopicPartition(UPDATES, 0): 12, TopicPartition(CHANGELOG, 3): 7}
    assert [(table, len(rows)) for table, rows in store.inserts] == [
        (SEGMENT_TABLE, 2),
        (ACTIVE_TABLE, 2),
        (TICKET_TABLE, 1),
    ]
    assert not sink.batch and await sink.flush() == {}


async def test_a_chunk_of_todays_shape_is_written_whole_and_counted_as_its_rows() -> None:
    store = RecordingStore()
    sink = _sink(store, batch_rows=7)
    labels = {"table": ACTIVE_TABLE}, {"table": TICKET_TABLE}
    before = [
        metrics.registry.get_sample_value("cci_sink_rows_written_total", x) or 0 for x in labels
    ]
    sink.add(CHANGELOG, 0, 1, b"2026-01@9", _chunk(users=3, tickets=2, ticket_users=True))
    assert not sink.due()  # 5 rows of 7
    sink.add(CHANGELOG, 0, 2, b"2026-01@10", _chunk(users=1, tickets=1, ticket_users=True))
    assert sink.due()

    await sink.flush()

    assert [(table, [row[:4] for row in rows]) for table, rows in store.inserts] == [
        (
            CHUNKS_TABLE,
            [
                [date(2026, 1, 1), ["plan", "product", "region", "tenure"], 3, 2],
                [date(2026, 1, 1), ["plan", "product", "region", "tenure"], 1, 1],
            ],
        )
    ]
    after = [
        metrics.registry.get_sample_value("cci_sink_rows_written_total", x) or 0 for x in labels
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == [4, 3]


@pytest.mark.parametrize(
    ("chunk", "why"),
    [
        (_chunk(users=1, tickets=1), "tickets without their user"),
        ({"seq": 1, "a": [["u1", 5, ["free", "docs", "eu"]]], "t": []}, "too few attributes"),
        ({"seq": 1, "a": [["u1", "5", ["free", "docs", "eu", "new"]]], "t": []}, "time as text"),
        ({"seq": 1, "a": [["u1", 2**62, ["free", "docs", "eu", "new"]]], "t": []}, "time too late"),
        ({"seq": 1, "a": [[1, 5, ["free", "docs", "eu", "new"]]], "t": []}, "user as number"),
        ({"seq": 1, "a": []}, "no tickets"),
        # A forged body whose first "a" (what ClickHouse's JSONExtract would read) is not valid.
        (b'{"a": [[1, 2, 3]], "t": [], "a": [["u1", 5, ["free", "docs", "eu", "new"]]]}', "twice"),
    ],
)
def test_a_chunk_of_another_shape_is_never_handed_to_the_stores_views(chunk: Any, why: str) -> None:
    """Such a chunk becomes rows in the sink, which reads the old shape and refuses the rest."""
    facts = FactRows(domain.user_dimensions(()))
    value = chunk if isinstance(chunk, bytes) else orjson.dumps(chunk)
    assert facts.chunk_row(b"2026-01@1", value) is None, why


def test_a_batch_is_due_by_rows_or_by_age() -> None:
    sink = _sink(RecordingStore(), batch_rows=3, flush_seconds=0.05)
    assert not sink.due()
    sink.add(CHANGELOG, 0, 1, b"2026-01@1", _chunk(users=1, tickets=1))
    assert not sink.due()
    sink.add(CHANGELOG, 0, 2, b"2026-01@2", _chunk(users=1, tickets=0))
    assert sink.due()  # 3 rows

    aged = _sink(RecordingStore(), batch_rows=1000, flush_seconds=0.05)
    aged.add(CHANGELOG, 0, 1, b"2026-01@1", None)  # even a tombstone's offset gets committed
    assert not aged.due()
    time.sleep(0.06)
    assert aged.due()


def test_by_default_a_backlog_waits_for_the_flush_interval_not_a_few_thousand_rows() -> None:
    # Each insert costs the embedded engine a part per table and month, and the merges after it:
    # with 5,000-row batches the sink wrote at every poll of a backlog, ~0.2 of a core in
    # `cci bench` (docs/performance.md).
    settings = load_settings({})
    store = RecordingStore()
    sink = _sink(store, settings.sink_batch_rows, settings.sink_flush_seconds)
    for seq in range(80):  # 40,000 rows, as a few polls of a 100,000-events/s backlog bring
        sink.add(CHANGELOG, 0, seq, f"2026-01@{seq}".encode(), _chunk(users=400, tickets=100))
        assert not sink.due(), f"due after {sink.batch.row_count} rows"


async def test_refused_inserts_are_retried_and_counted_until_written() -> None:
    store = RecordingStore(refuse=3)
    sink = _sink(store)
    sink.add(UPDATES, 0, 0, b"k", _update("free"))
    before = metrics.registry.get_sample_value("cci_sink_retries_total", {"table": SEGMENT_TABLE})

    offsets = await sink.flush()

    after = metrics.registry.get_sample_value("cci_sink_retries_total", {"table": SEGMENT_TABLE})
    assert (after or 0) - (before or 0) == 3
    assert offsets == {TopicPartition(UPDATES, 0): 1}
    assert len(store.inserts) == 1


async def test_a_stopping_sink_gives_up_and_keeps_its_batch_unconfirmed() -> None:
    sink = _sink(RecordingStore(refuse=10**6))
    sink.add(UPDATES, 0, 0, b"k", _update("free"))
    sink.stopping = True

    with pytest.raises(SinkStopped):
        await sink.flush()
    assert sink.batch  # nothing was confirmed, nothing is committed


async def test_discard_forgets_the_rows_of_lost_partitions_only() -> None:
    store = RecordingStore()
    sink = _sink(store)
    sink.add(UPDATES, 0, 4, b"k", _update("kept"))
    sink.add(UPDATES, 1, 8, b"k", _update("lost"))
    sink.add(CHANGELOG, 1, 2, b"2026-01@1", _chunk(users=3, tickets=0))

    sink.discard({TopicPartition(UPDATES, 1), TopicPartition(CHANGELOG, 1)})
    offsets = await sink.flush()

    assert offsets == {TopicPartition(UPDATES, 0): 5}
    assert [(table, [row[2] for row in rows]) for table, rows in store.inserts] == [
        (SEGMENT_TABLE, ["kept"])
    ]


def test_an_unreadable_record_is_skipped_and_counted() -> None:
    sink = _sink(RecordingStore())
    before = metrics.registry.get_sample_value("cci_sink_skipped_records_total", {"topic": UPDATES})

    sink.add(UPDATES, 0, 0, b"k", b"{not json")
    sink.add(UPDATES, 0, 1, b"k", orjson.dumps({"month": "2026-01"}))

    after = metrics.registry.get_sample_value("cci_sink_skipped_records_total", {"topic": UPDATES})
    assert (after or 0) - (before or 0) == 2
    assert sink.batch.rows == {} and sink.batch.commit == {TopicPartition(UPDATES, 0): 2}

    skipped = {"topic": CHANGELOG}
    before = metrics.registry.get_sample_value("cci_sink_skipped_records_total", skipped)
    sink.add(CHANGELOG, 1, 0, b"2026-01@1", b'{"seq": 1, "a": [')
    short = {"seq": 1, "a": [["u1", 5, ["free", "docs"]]], "t": []}
    sink.add(CHANGELOG, 1, 1, b"2026-01@2", orjson.dumps(short))
    sink.add(CHANGELOG, 1, 2, b"not-a-month@3", _chunk(users=1, tickets=0, ticket_users=True))
    after = metrics.registry.get_sample_value("cci_sink_skipped_records_total", skipped)
    assert (after or 0) - (before or 0) == 3
    assert sink.batch.rows == {} and sink.batch.commit[TopicPartition(CHANGELOG, 1)] == 3


def test_workers_share_a_group_per_store_and_each_embedded_store_gets_its_own() -> None:
    def group(url: str) -> str:
        return sink_group(load_settings({"CCI_APP_ID": "cci", "CCI_CLICKHOUSE_URL": url}))

    assert group("http://u:p@ch:8123/db") == "cci-sink"
    assert group("chdb:///var/lib/a") == group("chdb:///var/lib/a/")
    assert group("chdb:///var/lib/a") != group("chdb:///var/lib/b")
    assert group("chdb:///var/lib/a").startswith("cci-sink-")
