"""A store that lost data is rebuilt from the topics, loudly; a damaged one is named.

The sink commits its offsets once ClickHouse has the rows, so a store that loses rows afterwards
(its ``metadata/`` deleted, restored from an old backup) would never get them back by consuming
on from the committed offsets. The sink (``streams/sink/``) records in the store, with every batch,
the offsets the store holds, and on start re-reads what the store is missing.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from streams.dev.generate import generate
from streams.pipeline.recount import recount
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    load_settings,
)
from streams.topics import changelog_topic
from tests.integration.harness import (
    WorkerProcess,
    partitions_with_records,
    produce,
    run_cci,
    samples_by_label,
    wait_for_figures,
    wait_until,
)
from tests.integration.test_clickhouse_pipeline import post_query

COUNTS_SQL = (
    "SELECT (SELECT count() FROM cci_segment_monthly FINAL), "
    "(SELECT count() FROM cci_monthly_active_users FINAL), "
    "(SELECT count() FROM cci_tickets FINAL)"
)


def store_counts(worker: WorkerProcess) -> tuple[int, ...]:
    status, body = post_query(worker.port, COUNTS_SQL)
    assert status == 200, body
    return tuple(int(n) for n in body["rows"][0])


def settled_counts(worker: WorkerProcess, timeout: float = 60.0) -> tuple[int, ...]:
    """The store's row counts once they stop changing (non-zero)."""
    deadline = time.monotonic() + timeout
    previous: tuple[int, ...] = ()
    while time.monotonic() < deadline:
        counts = store_counts(worker)
        if counts == previous and all(counts):
            return counts
        previous = counts
        time.sleep(2.0)
    raise AssertionError(f"store counts did not settle: {previous}\n{worker.diagnostics()}")


def test_a_store_that_lost_its_tables_is_rebuilt_from_the_topics(pipeline) -> None:
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=150, months=2, seed=13, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker("w")
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected, workers=[worker])
    before = settled_counts(worker)
    assert worker.stop() == 0

    # The engine's table definitions are gone: the tables come back empty on the next start.
    shutil.rmtree(pipeline.tmp_path / "w" / "clickhouse" / "metadata")
    again = pipeline.worker("w")
    # /health does not wait for the store: the sink opens it (503 until then) once it has applied
    # the schema, which a loaded machine may finish after the groups are joined.
    wait_until(lambda: post_query(again.port, "SELECT 1")[0] == 200, 60, "the store never opened")
    deadline = time.monotonic() + 60
    while store_counts(again) != before and time.monotonic() < deadline:
        time.sleep(1.0)
    assert store_counts(again) == before, again.diagnostics()
    log = again.log_tail(400)
    assert "rebuilding it from the topic" in log, log
    # Every partition the sink had written from is re-read, once, and nothing else.
    rebuilds = samples_by_label(again.get("/metrics"), "cci_sink_store_rebuilds", "topic")
    sink_topics = (TOPIC_UPDATES, changelog_topic(settings.app_id))
    assert rebuilds == {
        topic: partitions_with_records(pipeline.bootstrap, topic) for topic in sink_topics
    }, rebuilds


def test_a_damaged_table_definition_is_named(pipeline, tmp_path: Path) -> None:
    worker = pipeline.worker("w")
    url = worker.env["CCI_CLICKHOUSE_URL"]
    assert worker.stop() == 0
    definition = tmp_path / "w" / "clickhouse" / "metadata" / "default" / "cci_tickets.sql"
    assert definition.is_file(), "chDB keeps table definitions as metadata/<database>/<table>.sql"
    definition.write_text("garbage (\n")
    env = {"PATH": "/usr/bin:/bin", "CCI_CLICKHOUSE_URL": url}
    result = run_cci("query", "SELECT 1", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "cci_tickets.sql" in result.stderr, result.stderr
    assert "another process" not in result.stderr, result.stderr
