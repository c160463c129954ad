"""The store's schema: the versioned DDL files of ``schemas/clickhouse/`` (``NNN_name.sql``),
the ``schema_migrations`` table that records which were applied, and their cluster forms
(``CCI_CLICKHOUSE_CLUSTER``). Pure text: applying them is ``Store.apply_schema``'s."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from streams.store.errors import StoreError

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def split_statements(text: str) -> list[str]:
    """The statements of a DDL file: each ends with a line ending in a semicolon. Comment lines
    are for the reader and are not sent (one ending in a semicolon ends nothing)."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().removesuffix(";").rstrip())
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [statement for statement in statements if statement]


def load_migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """``NNN_name.sql`` files in version order; a repeated version number is an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise StoreError(f"{path}: schema files are named NNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise StoreError(f"{path}: version {version} is also {migrations[version].name}")
        text = path.read_text(encoding="utf-8")
        migrations[version] = Migration(
            version=version,
            name=path.name,
            statements=tuple(split_statements(text)),
            checksum=hashlib.sha256(text.encode()).hexdigest(),
        )
    if not migrations:
        raise StoreError(f"no schema files in {directory}")
    return [migrations[v] for v in sorted(migrations)]


# --- cluster mode (CCI_CLICKHOUSE_CLUSTER; docs/clickhouse-cluster.md) ----------------------------

# Before a migration: the single-node statement, and its cluster form below.
MIGRATIONS_TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    "version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
    ") ENGINE = ReplacingMergeTree ORDER BY version"
)
LOCAL_SUFFIX = "_local"
# Every version of a row must live on one shard, since FINAL collapses versions only within a
# shard: each table is sharded by (a part of) its ORDER BY key. A new table needs an entry here.
SHARDING_KEYS = {
    "cci_segment_monthly": "cityHash64(dimension, segment)",
    "cci_monthly_active_users": "cityHash64(user_id)",
    "cci_tickets": "cityHash64(ticket_id)",
    "cci_sink_offsets": "cityHash64(group_id, topic, partition)",
}
# {shard}, {replica}, {database} and {table} are the server's macros, expanded on each node.
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.{}-]+$")

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)(\s)", re.IGNORECASE)
_CREATE_VIEW = re.compile(
    r"^(CREATE VIEW IF NOT EXISTS|CREATE OR REPLACE VIEW) (\w+) AS\b", re.IGNORECASE
)
_CREATE_MATERIALIZED_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)(\s+TO (\w+) AS\b)", re.IGNORECASE
)
_ALTER_TABLE = re.compile(r"^ALTER TABLE (\w+)(\s)", re.IGNORECASE)
_NULL_ENGINE = re.compile(r"\sENGINE = Null$")
_ENGINE = re.compile(r"ENGINE = (\w*)MergeTree(?:\(([^)]*)\))?")
# Replicated tables deduplicate a retried insert by themselves (replicated_deduplication_window).
_NON_REPLICATED_DEDUP = re.compile(r"\s*SETTINGS non_replicated_deduplication_window = \d+$")


def check_cluster_name(cluster: str) -> str:
    if not CLUSTER_NAME.match(cluster):
        raise StoreError(
            f"{cluster!r} is not a cluster name (letters, digits, _ . - and {{macro}} braces)"
        )
    return cluster


def cluster_statements(statement: str, cluster: str) -> list[str]:
    """The statements that do on ``cluster`` what ``statement`` does on one node.

    A table becomes a replicated local table ``NAME_local`` on every node plus a Distributed
    table under the old name, so inserts and every query keep their table names. A view is
    created on every node (it reads the Distributed tables), and so are a Null table and a
    materialized view (it writes to a Distributed table). An ALTER changes both tables.
    """
    on = f"ON CLUSTER '{check_cluster_name(cluster)}'"
    if (match := _CREATE_TABLE.match(statement)) and _NULL_ENGINE.search(statement):
        # A Null table keeps nothing (its views write the rows): one on every node.
        name = match.group(1)
        return [_CREATE_TABLE.sub(f"CREATE TABLE IF NOT EXISTS {name} {on}\\2", statement, count=1)]
    if match := _CREATE_MATERIALIZED_VIEW.match(statement):
        # On every node, writing to the Distributed table: each row reaches its shard.
        name = match.group(1)
        return [
            _CREATE_MATERIALIZED_VIEW.sub(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {on}\\2", statement, count=1
            )
        ]
    if match := _CREATE_TABLE.match(statement):
        name = match.group(1)
        if name not in SHARDING_KEYS:
            raise StoreError(f"table {name} has no sharding key in schema.SHARDING_KEYS")
        engine = _ENGINE.search(statement)
        if engine is None:
            raise StoreError(f"table {name}: only *MergeTree tables can be replicated")
        arguments = ", ".join(
            part for part in (f"'{REPLICA_PATH}'", "'{replica}'", engine.group(2)) if part
        )
        local = _CREATE_TABLE.sub(
            f"CREATE TABLE IF NOT EXISTS {name}{LOCAL_SUFFIX} {on}\\2", statement, count=1
        )
        local = local.replace(
            engine.group(0), f"ENGINE = Replicated{engine.group(1)}MergeTree({arguments})", 1
        )
        local = _NON_REPLICATED_DEDUP.sub("", local)
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {name} {on} AS {name}{LOCAL_SUFFIX}\n"
            f"ENGINE = Distributed('{cluster}', currentDatabase(), {name}{LOCAL_SUFFIX}, "
            f"{SHARDING_KEYS[name]})"
        )
        return [local, distributed]
    if match := _CREATE_VIEW.match(statement):
        head, name = match.group(1), match.group(2)
        return [_CREATE_VIEW.sub(f"{head} {name} {on} AS", statement, count=1)]
    if match := _ALTER_TABLE.match(statement):
        name = match.group(1)
        return [
            _ALTER_TABLE.sub(f"ALTER TABLE {name}{LOCAL_SUFFIX} {on}\\2", statement, count=1),
            _ALTER_TABLE.sub(f"ALTER TABLE {name} {on}\\2", statement, count=1),
        ]
    raise StoreError(f"no cluster form for this statement: {statement.splitlines()[0]}")


def migrations_table_ddl(cluster: str = "") -> str:
    """``schema_migrations``. On a cluster it is replicated to every node of every shard (no
    {shard} in its path), so any node a worker reaches knows what was applied."""
    if not cluster:
        return MIGRATIONS_TABLE_DDL
    return (
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ON CLUSTER "
        f"'{check_cluster_name(cluster)}' ("
        "version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
        ") ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}') ORDER BY version"
    )


def migration_statements(migration: Migration, cluster: str = "") -> list[str]:
    """What applying ``migration`` runs: its own statements on one node, their cluster forms on
    a cluster."""
    if not cluster:
        return list(migration.statements)
    return [
        out for statement in migration.statements for out in cluster_statements(statement, cluster)
    ]


def schema_ddl(cluster: str = "", directory: Path = SCHEMA_DIR) -> list[tuple[str, list[str]]]:
    """(what, statements) in the order a worker applies them to an empty store: the migrations
    table, then every schema file. ``cci store ddl`` prints these."""
    plan = [(MIGRATIONS_TABLE, [migrations_table_ddl(cluster)])]
    for migration in load_migrations(directory):
        plan.append((migration.name, migration_statements(migration, cluster)))
    return plan
