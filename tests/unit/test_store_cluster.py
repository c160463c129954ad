"""ClickHouse cluster mode: the statements a worker applies on one node (exactly today's) and on
a cluster (ON CLUSTER, replicated local tables, Distributed tables under the same names), each
and `cci store ddl` printing them. Parsing them with the real ClickHouse parser (chDB) is in
tests/integration/test_store_cluster_parse.py.

No ClickHouse cluster runs here (it needs Keeper and several servers): the cluster statements are
parsed, not executed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import cli
from streams.settings import SettingsError, load_settings
from streams.store.clickhouse import Store, StoreError
from streams.store.schema import (
    SHARDING_KEYS,
    cluster_statements,
    load_migrations,
    schema_ddl,
    split_statements,
)

CLUSTER = "cci_cluster"


def flat(cluster: str) -> list[str]:
    return [statement for _, statements in schema_ddl(cluster) for statement in statements]


def test_every_sharding_key_is_part_of_its_tables_sorting_key() -> None:
    """FINAL collapses versions within one shard: all versions of a row must go to one shard."""
    for statement in flat(""):
        match = re.match(r"CREATE TABLE IF NOT EXISTS (cci_\w+)", statement)
        if not match or statement.endswith("ENGINE = Null"):  # a Null table keeps no rows
            continue
        order_by = re.search(r"ORDER BY \(?([\w, ]+)\)?", statement)
        assert order_by is not None
        sorting = {column.strip() for column in order_by.group(1).split(",")}
        key = SHARDING_KEYS[match.group(1)]
        columns = set(re.findall(r"\w+", key.split("(", 1)[1]))
        assert columns <= sorting, f"{match.group(1)}: shard key {key} vs ORDER BY {sorting}"


def test_a_statement_without_a_cluster_form_is_refused() -> None:
    with pytest.raises(StoreError, match="no cluster form"):
        cluster_statements("DROP TABLE cci_tickets", CLUSTER)
    with pytest.raises(StoreError, match="no sharding key"):
        cluster_statements(
            "CREATE TABLE IF NOT EXISTS new_table (x UInt8) ENGINE = MergeTree ORDER BY x", CLUSTER
        )
    with pytest.raises(StoreError, match="not a cluster name"):
        cluster_statements("CREATE VIEW IF NOT EXISTS v AS SELECT 1", "c' SETTINGS x = 1 --")


def test_cci_store_ddl_prints_the_statements_in_order_each_ending_with_a_semicolon() -> None:
    for args, env, cluster in [
        (["store", "ddl"], {}, ""),
        (["store", "ddl", "--cluster", CLUSTER], {}, CLUSTER),
        (
            ["store", "ddl"],
            {"CCI_CLICKHOUSE_CLUSTER": "c2", "CCI_CLICKHOUSE_URL": "http://u:p@ch:8123/db"},
            "c2",
        ),
    ]:
        result = CliRunner().invoke(cli, args, env=env, prog_name="cci")
        assert result.exit_code == 0, result.output
        assert split_statements(result.output) == flat(cluster)
        body = [line for line in result.output.splitlines() if line and not line.startswith("--")]
        assert body[-1].endswith(";")
        assert result.output.count(";\n") == len(flat(cluster))


def test_a_bad_cluster_stops_with_status_2_naming_it() -> None:
    result = CliRunner().invoke(cli, ["store", "ddl", "--cluster", "a b"], prog_name="cci")
    assert result.exit_code == 2
    assert "--cluster" in result.output
    result = CliRunner().invoke(
        cli, ["store", "ddl"], env={"CCI_CLICKHOUSE_CLUSTER": "x"}, prog_name="cci"
    )
    assert result.exit_code == 2
    assert "CCI_CLICKHOUSE_CLUSTER" in result.output


def test_the_cluster_setting() -> None:
    url = "https://cci:secret@ch:8443/default"
    assert load_settings({}).clickhouse_cluster == ""
    assert (
        load_settings(
            {"CCI_CLICKHOUSE_CLUSTER": "prod", "CCI_CLICKHOUSE_URL": url}
        ).clickhouse_cluster
        == "prod"
    )
    with pytest.raises(SettingsError, match="CCI_CLICKHOUSE_CLUSTER"):
        load_settings({"CCI_CLICKHOUSE_CLUSTER": "prod"})  # the embedded store is one node
    with pytest.raises(SettingsError, match="CCI_CLICKHOUSE_CLUSTER"):
        load_settings({"CCI_CLICKHOUSE_CLUSTER": "pr'od", "CCI_CLICKHOUSE_URL": url})
    with pytest.raises(StoreError, match="one node"):
        Store("chdb:///tmp/x", cluster="prod")


def test_the_single_node_statements_are_the_schema_files_unchanged() -> None:
    statements = flat("")
    # The migrations table exactly as the worker created it before cluster mode existed.
    assert statements[0] == (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
        ") ENGINE = ReplacingMergeTree ORDER BY version"
    )
    assert statements[1:] == [s for m in load_migrations() for s in m.statements]


def test_on_a_cluster_the_writer_waits_for_every_shard_and_the_reader_does_not() -> None:
    seen: list[dict[str, Any]] = []

    def factory(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return object()

    store = Store("https://cci:secret@ch:8443/default", cluster=CLUSTER, client_factory=factory)
    store._client()
    store._client(analyst_tag="cci-test")
    assert seen[0]["settings"] == {"insert_distributed_sync": 1}
    assert "insert_distributed_sync" not in seen[1]["settings"]
    Store("https://cci:secret@ch:8443/default", client_factory=factory)._client()
    assert "settings" not in seen[2]
