"""ClickHouse cluster mode, parsed by the real ClickHouse parser (chDB's formatQuery): the
statements a worker applies on one node (exactly today's) and on a cluster (ON CLUSTER, replicated
local tables, Distributed tables under the same names).

No ClickHouse cluster runs here (it needs Keeper and several servers): the cluster statements are
parsed, not executed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from streams.store.clickhouse import Store, StoreError, open_store
from streams.store.schema import LOCAL_SUFFIX, SHARDING_KEYS
from tests.unit.test_store_cluster import CLUSTER, flat


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with open_store(f"chdb://{tmp_path_factory.mktemp('parse') / 'ch'}") as store:
        yield store


def parsed(engine: Store, statement: str) -> str:
    """ClickHouse's own formatting of ``statement``; StoreError when it does not parse."""
    return str(engine.query("SELECT formatQuery({sql:String})", {"sql": statement}).rows[0][0])


def test_the_single_node_statements_are_what_a_worker_runs_today(tmp_path: Path) -> None:
    run: list[str] = []

    def recording_client(**kwargs: Any) -> Any:
        client = clickhouse_connect.get_client(**kwargs)
        command = client.command

        def record(sql: str, *args: Any, **kw: Any) -> Any:
            run.append(sql)
            return command(sql, *args, **kw)

        client.command = record  # type: ignore[method-assign]
        return client

    with open_store(f"chdb://{tmp_path / 'ch'}", client_factory=recording_client) as store:
        store.apply_schema()
    assert run == flat("")


def test_every_statement_parses_in_both_modes(engine: Store) -> None:
    for cluster in ("", CLUSTER, "{cluster}"):
        for statement in flat(cluster):
            parsed(engine, statement)  # raises on a syntax error
    with pytest.raises(StoreError, match="Syntax error"):
        parsed(engine, "CREATE TABLE t ON CLUSTER (x")


def test_on_a_cluster_every_table_is_replicated_and_distributed_under_its_old_name(
    engine: Store,
) -> None:
    single = [parsed(engine, statement) for statement in flat("")]
    clustered = [parsed(engine, statement) for statement in flat(CLUSTER)]
    assert all(f"ON CLUSTER {CLUSTER}" in statement for statement in clustered)

    def created(statements: list[str], kind: str) -> dict[str, str]:
        pattern = rf"^CREATE {kind} IF NOT EXISTS (\w+)"
        return {m.group(1): s for s in statements if (m := re.match(pattern, s))}

    tables, views = created(single, "TABLE"), created(single, "VIEW")
    cluster_tables, cluster_views = created(clustered, "TABLE"), created(clustered, "VIEW")
    assert set(cluster_views) == set(views)
    for name in tables:
        if name == "schema_migrations":
            assert "ReplicatedReplacingMergeTree" in cluster_tables[name]
            continue
        if tables[name].endswith("ENGINE = `Null`"):  # keeps nothing: one on every node
            assert cluster_tables[name].endswith("ENGINE = `Null`")
            continue
        local = cluster_tables[name + LOCAL_SUFFIX]
        assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/" in local
        assert "non_replicated_deduplication_window" not in local
        distributed = cluster_tables[name]
        assert f"AS {name}{LOCAL_SUFFIX}" in distributed
        assert f"Distributed('{CLUSTER}', currentDatabase(), {name}{LOCAL_SUFFIX}" in distributed
    assert set(cluster_tables) == set(tables) | {t + LOCAL_SUFFIX for t in SHARDING_KEYS}
    # Materialized views are on every node and write to the Distributed tables (old names).
    single_views = created(single, "MATERIALIZED VIEW")
    cluster_materialized = created(clustered, "MATERIALIZED VIEW")
    assert set(cluster_materialized) == set(single_views) != set()
    for name, statement in cluster_materialized.items():
        target = re.search(r"\bTO (\w+)", statement)
        assert target is not None and target.group(1) in SHARDING_KEYS, statement
        assert target.group(1) == re.search(r"\bTO (\w+)", single_views[name]).group(1)  # type: ignore[union-attr]
    # The ALTERs of versions 3 and 4 change the local tables and the Distributed ones, in that
    # order.
    alters = [s for s in clustered if s.startswith("ALTER TABLE")]
    assert [s.split()[2] for s in alters] == [
        "cci_tickets" + LOCAL_SUFFIX,
        "cci_tickets",
        "cci_segment_monthly" + LOCAL_SUFFIX,
        "cci_segment_monthly",
    ]
