"""The store against the real ClickHouse engine (chDB, in this process): schema versions,
read-only queries, values as parameters, and replays of facts converging in FINAL."""

from __future__ import annotations

import gc
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from streams import domain
from streams.sink.rows import (
    ACTIVE_COLUMNS,
    ACTIVE_TABLE,
    CHUNKS_COLUMNS,
    CHUNKS_TABLE,
    SEGMENT_COLUMNS,
    SEGMENT_TABLE,
    TICKET_COLUMNS,
    TICKET_TABLE,
    FactRows,
    segment_row,
)
from streams.store.analyst_query import (
    QUERY_MEMORY_BYTES,
    QUERY_RESULT_ROWS,
    QUERY_SECONDS,
    QUERY_SLOTS,
)
from streams.store.clickhouse import Store, open_store
from streams.store.errors import QueryRefused, StoreBusy, StoreError
from streams.store.schema import SCHEMA_DIR, load_migrations

DIMENSIONS = domain.user_dimensions(("company_size",))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    # One chDB engine per process: every test opens its own directory and closes it after.
    with open_store(f"chdb://{tmp_path / 'clickhouse'}") as opened:
        opened.apply_schema()
        yield opened


def _count(store: Store, sql: str) -> int:
    return int(store.query(sql).rows[0][0])


def test_schema_is_applied_once_per_version_and_a_new_file_applies_alone(tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, schema)
    shipped = load_migrations(schema)
    with open_store(f"chdb://{tmp_path / 'clickhouse'}") as store:
        assert store.apply_schema(schema) == [m.version for m in shipped]
        assert store.apply_schema(schema) == []
        (schema / "999_more.sql").write_text(
            "-- a later version\nCREATE TABLE IF NOT EXISTS extra (a UInt8)\n"
            "ENGINE = MergeTree ORDER BY a;\n"
        )
        assert store.apply_schema(schema) == [999]
        recorded = store.query("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
        assert recorded.rows[:3] == [
            (1, "001_tables.sql"),
            (2, "002_views.sql"),
            (3, "003_ticket_user.sql"),
        ]
        assert recorded.rows == [*((m.version, m.name) for m in shipped), (999, "999_more.sql")]
        tables = {row[0] for row in store.query("SHOW TABLES").rows}
    assert {SEGMENT_TABLE, ACTIVE_TABLE, TICKET_TABLE, "cci_segment_trend", "extra"} <= tables
    # Reopened (a worker restart): nothing to apply, nothing lost.
    with open_store(f"chdb://{tmp_path / 'clickhouse'}") as store:
        assert store.apply_schema(schema) == []
        assert _count(store, "SELECT count() FROM schema_migrations FINAL") == len(shipped) + 1


def test_the_band_migration_upgrades_a_store_with_figures(tmp_path: Path) -> None:
    """A store written before bands: its rows keep their figures with a NULL band, new rows carry
    theirs, and the trend view (so `cci report`) shows the column."""
    before = tmp_path / "before"
    before.mkdir()
    for path in SCHEMA_DIR.glob("00[123]_*.sql"):
        shutil.copy(path, before)
    old_columns = [c for c in SEGMENT_COLUMNS if c != "band"]

    def row(month: str, tickets: int, band: str | None, version: int) -> list[object]:
        record = {
            "month": month,
            "dimension": "plan",
            "segment": "free",
            "tickets": tickets,
            "active_users": 100,
            "cci": tickets / 100,
            "contact_rate_pct": float(tickets),
            "band": band,
            "version": version,
            "emitted_at": "2026-03-05T10:11:12.345Z",
        }
        return segment_row(orjson.dumps(record))

    with open_store(f"chdb://{tmp_path / 'clickhouse'}") as store:
        assert store.apply_schema(before) == [1, 2, 3]
        old = row("2026-02", 25, None, 1)
        store.insert(SEGMENT_TABLE, [old[: len(old_columns)]], old_columns)
        with pytest.raises(StoreError):
            store.query("SELECT band FROM cci_segment_monthly")
        assert store.apply_schema() == [4, 5, 6]  # bands, the sink offsets, chunk views
        store.insert(SEGMENT_TABLE, [row("2026-03", 35, "above", 2)], SEGMENT_COLUMNS)

        monthly = store.query(
            "SELECT toString(month), tickets, band FROM cci_segment_monthly FINAL ORDER BY month"
        )
        trend = store.query(
            "SELECT toString(month), band, previous_cci FROM cci_segment_trend ORDER BY month"
        )
    assert monthly.rows == [("2026-02-01", 25, None), ("2026-03-01", 35, "above")]
    assert trend.rows == [("2026-02-01", None, None), ("2026-03-01", "above", 0.25)]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO cci_segment_monthly (segment) VALUES ('x')",
        "DROP TABLE cci_tickets",
        "CREATE TABLE sneaky (a UInt8) ENGINE = Memory",
        "SET readonly = 0",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "ALTER TABLE cci_tickets DELETE WHERE 1",
    ],
)
def test_queries_are_read_only(store: Store, sql: str) -> None:
    with pytest.raises(StoreError, match=r"READONLY|refused"):
        store.query(sql)
    assert _count(store, "SELECT count() FROM system.tables WHERE name = 'sneaky'") == 0
    assert _count(store, "SELECT count() FROM system.tables WHERE name = 'cci_tickets'") == 1


def test_queries_have_limits_they_cannot_lift(store: Store) -> None:
    limits = store.query(
        "SELECT getSetting('max_execution_time'), getSetting('max_memory_usage'), "
        "getSetting('max_result_rows')"
    ).rows[0]

    assert [float(limit) for limit in limits] == [
        QUERY_SECONDS,
        QUERY_MEMORY_BYTES,
        QUERY_RESULT_ROWS,
    ]
    for lift in ("max_execution_time = 0", "max_memory_usage = 0", "max_result_rows = 0"):
        with pytest.raises(StoreError, match=r"READONLY|refused"):
            store.query(f"SELECT 1 SETTINGS {lift}")
        with pytest.raises(StoreError, match=r"READONLY|refused"):
            store.query(f"SELECT * FROM (SELECT 1 SETTINGS {lift})")


def test_heavy_queries_hit_the_limits_instead_of_the_processs_memory(store: Store) -> None:
    with pytest.raises(StoreError, match="TOO_MANY_ROWS_OR_BYTES"):
        store.query("SELECT number FROM numbers(20000000)")
    with pytest.raises(StoreError, match="MEMORY_LIMIT_EXCEEDED"):
        store.query("SELECT groupArray(number) FROM numbers(200000000)")
    # 100 MB in fewer rows than the row limit, as a computed and as a constant column (which
    # ClickHouse's max_result_bytes counts as one value).
    for column in ("repeat('x', 1000 + number % 2)", "repeat('x', 1000)"):
        with pytest.raises(StoreError, match="TOO_MANY_ROWS_OR_BYTES"):
            store.query(f"SELECT {column} AS x FROM numbers(99999)")
    assert store.query("SELECT 2").rows == [(2,)]
    assert len(store.query("SELECT repeat('x', 100) FROM numbers(99999)").rows) == 99999


# An attacker's reach: host files, URLs, other servers, programs, secrets in system tables.
HOSTILE = [
    "SELECT file('/etc/hostname')",
    "select FiLe('/etc/hostname')",
    "SELECT `file`('/proc/self/environ')",
    "SELECT /* hi */ file -- there\n('/etc/hostname')",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM (SELECT 1 AS a) AS t JOIN file('/etc/hostname', 'LineAsString') AS f ON 1",
    "SELECT 1 WHERE 1 IN (SELECT length(file('/etc/hostname')))",
    "WITH (SELECT file('/etc/hostname')) AS f SELECT f",
    "WITH x AS (SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')) SELECT * FROM x",
    "SELECT * FROM view(SELECT file('/etc/hostname'))",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM s3('http://127.0.0.1:9/b/k', 'CSV', 'a String')",
    "SELECT * FROM executable('id', 'TSV', 'a String')",
    "SELECT * FROM merge('system', '^processes$')",
    "SELECT dictGet('secrets', 'value', 1)",
    "SELECT query FROM system.processes",
    "SELECT * FROM `system`.`processes`",
    "SELECT 1 WHERE 'x' IN system.processes",
    "SELECT name FROM system.users",
    "SELECT * FROM system.named_collections",
    "SELECT * FROM system.server_settings",
    "SELECT 1 FORMAT JSON",
    "SELECT 1 SETTINGS max_threads = 1",
    # SHOW statements other than SHOW TABLES / DATABASES: the same AST (ShowTables), but they read
    # system.clusters, system.merges, system.settings, system.dictionaries, filesystem caches.
    "SHOW CLUSTERS",
    "SHOW CLUSTER 'default'",
    "SHOW MERGES",
    "SHOW SETTINGS LIKE 'max%'",
    "SHOW CHANGED SETTINGS LIKE '%'",
    "SHOW DICTIONARIES",
    "SHOW FILESYSTEM CACHES",
    "SHOW TABLES FROM system INTO OUTFILE 'tables.txt'",
    "SHOW TABLES FORMAT JSON",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_no_file_url_program_or_secret_is_reachable(store: Store, sql: str) -> None:
    with pytest.raises(QueryRefused):
        store.query(sql)


def test_introspection_functions_are_off(store: Store) -> None:
    with pytest.raises(StoreError, match="FUNCTION_NOT_ALLOWED"):
        store.query("SELECT addressToSymbol(toUInt64(1))")


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW TABLES",
        "show tables from system like 'data%'",
        "SHOW TABLES IN `system` NOT ILIKE '%a%' LIMIT 3",
        "SHOW DATABASES",
        "SHOW DATABASES LIKE 'sys%'",
    ],
)
def test_show_tables_and_databases_answer(store: Store, sql: str) -> None:
    store.query(sql)


@pytest.mark.parametrize("into", ["", " TRUNCATE", " APPEND", " AND STDOUT"])
def test_into_outfile_writes_nothing(store: Store, tmp_path: Path, into: str) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(QueryRefused):
        store.query(f"SELECT 'x' INTO OUTFILE '{target}'{into}")
    with pytest.raises(QueryRefused):
        store.query(f"SELECT * FROM (SELECT 'x') INTO OUTFILE '{target}' FORMAT CSV")
    assert not target.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'leak' AS x; DROP TABLE cci_tickets",
        "SELECT 'leak' AS x; SELECT 2",
        "SELECT 'leak' /* ; */ AS x; -- ;\nSELECT 2",
        "KILL QUERY WHERE 1",
        "SYSTEM DROP DNS CACHE",
        "SET max_memory_usage = 0",
        "USE system",
        "SHOW PROCESSLIST",
        "SHOW CREATE TABLE cci_tickets",
        "EXPLAIN SYNTAX SELECT 1",
        "OPTIMIZE TABLE cci_tickets FINAL",
        "TRUNCATE TABLE cci_tickets",
    ],
)
def test_only_one_read_statement_runs_and_nothing_carries_over(store: Store, sql: str) -> None:
    before = _count(store, "SELECT count() FROM system.tables WHERE name = 'cci_tickets'")

    with pytest.raises(QueryRefused):
        store.query(sql)

    assert store.query("SELECT 2 AS y").rows == [(2,)]  # not [('leak',)]
    assert before == _count(store, "SELECT count() FROM system.tables WHERE name = 'cci_tickets'")


def test_parameters_are_bound_by_the_engine_never_pasted_into_the_text(store: Store) -> None:
    assert store.query("SELECT {v:String} AS v", {"v": "a'); SELECT file('/x"}).rows == [
        ("a'); SELECT file('/x",)
    ]
    with pytest.raises(QueryRefused, match="placeholders"):
        store.query("SELECT '%(v)s' AS v", {"v": "') , file('/etc/hostname"})
    with pytest.raises(QueryRefused, match="placeholders"):
        store.query("SELECT 'a%' LIKE 'a%%' AS v", {"v": 1})
    # An identifier parameter is judged as the table it names.
    with pytest.raises(QueryRefused, match=r"system\.processes"):
        store.query("SELECT * FROM {t:Identifier}", {"t": "system.processes"})
    assert store.query("SELECT count() FROM {t:Identifier}", {"t": "cci_tickets"}).rows == [(0,)]


@pytest.mark.parametrize("name", ["f\u0456le", "\uff46\uff49\uff4c\uff45", "file\u200b"])
def test_look_alike_names_are_refused(store: Store, name: str) -> None:
    # A syntax error for ClickHouse, or (zero-width space) the file function itself.
    with pytest.raises(QueryRefused):
        store.query(f"SELECT {name}('/etc/hostname')")


def test_values_travel_as_data_not_sql(store: Store) -> None:
    hostile = "O'Brien'); DROP TABLE cci_tickets; --"
    record = {
        "month": "2026-03",
        "dimension": "plan",
        "segment": hostile,
        "tickets": 3,
        "active_users": 7,
        "cci": 3 / 7,
        "contact_rate_pct": 100 * (3 / 7),
        "version": 1_774_000_000_000_001,
        "emitted_at": "2026-03-05T10:11:12.345Z",
    }
    store.insert(SEGMENT_TABLE, [segment_row(orjson.dumps(record))], SEGMENT_COLUMNS)

    found = store.query(
        "SELECT month, segment, cci, contact_rate_pct, version, updated_at "
        "FROM cci_segment_monthly FINAL WHERE segment = {segment:String}",
        {"segment": hostile},
    )

    # Floats come back bit for bit; the time in UTC.
    assert found.rows == [
        (
            date(2026, 3, 1),
            hostile,
            3 / 7,
            100 * (3 / 7),
            1_774_000_000_000_001,
            datetime(2026, 3, 5, 10, 11, 12, 345000),
        )
    ]
    assert _count(store, "SELECT count() FROM system.tables WHERE name = 'cci_tickets'") == 1


def test_inserts_release_their_rows_and_follow_schema_changes_and_failures(store: Store) -> None:
    columns = ("id", "name")
    store.command("CREATE TABLE scratch (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
    rows = [[1, "a"], [2, "b"]]
    references = sys.getrefcount(rows)
    gc.disable()
    try:
        store.insert("scratch", rows, columns)
        store.insert("scratch", [[3, "c"]], columns)
        # The next batch released the first by reference counting: no cycle keeps rows alive
        # until the collector runs.
        assert sys.getrefcount(rows) == references
    finally:
        gc.enable()

    with pytest.raises(StoreError):
        store.insert("scratch", [[3, "c", "too many"]], ("id", "name", "nope"))
    store.insert("scratch", [[3, "c"]], columns)  # the failure left nothing behind
    store.command("ALTER TABLE scratch ADD COLUMN size UInt8 DEFAULT 7")
    store.insert("scratch", [[4, "d", 9]], ("id", "name", "size"))
    store.insert("scratch", [[5, "e"]], columns)

    found = store.query("SELECT id, name, size FROM scratch ORDER BY id").rows
    assert found == [(1, "a", 7), (2, "b", 7), (3, "c", 7), (3, "c", 7), (4, "d", 9), (5, "e", 7)]


def _chunk(label: str, seq: int, users: list, tickets: list) -> tuple[bytes, bytes]:
    return f"{label}@{seq}".encode(), orjson.dumps({"seq": seq, "a": users, "t": tickets})


def _insert_chunks(store: Store, chunks: list[tuple[bytes, bytes]], path: str = "rows") -> None:
    """Each chunk as rows built here (``rows``) or whole, unpacked by the store's views."""
    facts = FactRows(DIMENSIONS)
    for key, value in chunks:
        if path == "views":
            row = facts.chunk_row(key, value)
            assert row is not None, value
            store.insert(CHUNKS_TABLE, [row], CHUNKS_COLUMNS)
            continue
        users, tickets = facts.chunk_rows(key, value)
        store.insert(ACTIVE_TABLE, users, ACTIVE_COLUMNS)
        store.insert(TICKET_TABLE, tickets, TICKET_COLUMNS)


def _final_facts(store: Store) -> tuple[list[tuple], list[tuple]]:
    users = store.query(
        "SELECT month, user_id, toUnixTimestamp64Micro(active_at), plan, product, region, tenure, "
        "extra FROM cci_monthly_active_users FINAL ORDER BY month, user_id"
    ).rows
    tickets = store.query(
        "SELECT ticket_id, user_id, month, toUnixTimestamp64Micro(created_at), channel, plan, "
        "tenure FROM cci_tickets FINAL ORDER BY ticket_id"
    ).rows
    return users, tickets


# Attributes: plan, product, region, company_size, tenure (+ channel for tickets).
FREE = ["free", "docs", "eu", "1-10", "new"]
PAID = ["paid", "docs", "eu", "1-10", "new"]
CHUNKS = [
    # u1 in March, first seen late (ts 300), then an earlier activity (ts 100) with other segments.
    _chunk(
        "2026-03", 10, [["u1", 300, FREE], ["u2", 200, FREE]], [["t1", 500, [*FREE, "email"], "u1"]]
    ),
    _chunk("2026-03", 11, [["u1", 100, PAID]], []),
    # t1 resent with an earlier time in February: the ticket moves month.
    _chunk("2026-02", 12, [], [["t1", 50, [*PAID, "phone"], "u1"]]),
    _chunk("2026-02", 13, [["u1", 40, FREE]], []),  # February is another user-month
]


@pytest.mark.parametrize("path", ["rows", "views"])
def test_replays_of_chunks_in_any_order_converge_to_the_streams_winners(
    tmp_path: Path, path: str
) -> None:
    expected_users = [
        (date(2026, 2, 1), "u1", 40, "free", "docs", "eu", "new", {"company_size": "1-10"}),
        (date(2026, 3, 1), "u1", 100, "paid", "docs", "eu", "new", {"company_size": "1-10"}),
        (date(2026, 3, 1), "u2", 200, "free", "docs", "eu", "new", {"company_size": "1-10"}),
    ]
    expected_tickets = [("t1", "u1", date(2026, 2, 1), 50, "phone", "paid", "new")]
    orders = {
        "in order": CHUNKS,
        "reversed": CHUNKS[::-1],
        "twice, interleaved": [c for pair in zip(CHUNKS, CHUNKS[::-1], strict=True) for c in pair],
    }
    for name, chunks in orders.items():
        with open_store(f"chdb://{tmp_path / name.replace(' ', '-')}") as store:
            store.apply_schema()
            _insert_chunks(store, chunks, path)
            assert _final_facts(store) == (expected_users, expected_tickets), name
            store.command("OPTIMIZE TABLE cci_monthly_active_users FINAL")
            store.command("OPTIMIZE TABLE cci_tickets FINAL")
            assert _count(store, "SELECT count() FROM cci_monthly_active_users") == 3, name
            assert _count(store, "SELECT count() FROM cci_tickets") == 1, name


def test_the_chunk_views_write_exactly_the_rows_the_sink_would_build(tmp_path: Path) -> None:
    """Every column, with values a JSON parser could trip on, two extra dimensions, and event
    times from 1970 to 2260: the views of version 6 and ``FactRows.chunk_rows`` agree."""
    dimensions = domain.user_dimensions(("company_size", "country"))
    facts = FactRows(dimensions)
    odd = ['quote"d', "back\\slash", "tab\tnew\nline", "ünïcödé ✓", "", "comma, semi;", "\u2028"]
    chunks = []
    for n, value in enumerate(odd):
        attributes = [value, f"p{n}", "eu", f"size {value}", value[::-1], "12m+"]
        ts = [1, 1_780_000_000_123_456, 9_000_000_000_000_000][n % 3] + n
        chunks.append(
            _chunk(
                f"2026-0{1 + n % 3}",
                n,
                [[f"u{value}", ts, attributes]],
                [[f"t{value}", ts + 1, [*attributes, f"chan {value}"], f"u{value}"]],
            )
        )
    columns = {
        ACTIVE_TABLE: "* EXCEPT inserted_at",
        TICKET_TABLE: "* EXCEPT inserted_at",
    }
    with open_store(f"chdb://{tmp_path / 'clickhouse'}") as store:
        store.apply_schema()
        for table in columns:
            store.command(f"CREATE TABLE expected_{table} AS {table}")
        for key, value in chunks:
            users, tickets = facts.chunk_rows(key, value)
            store.insert(f"expected_{ACTIVE_TABLE}", users, ACTIVE_COLUMNS)
            store.insert(f"expected_{TICKET_TABLE}", tickets, TICKET_COLUMNS)
            row = facts.chunk_row(key, value)
            assert row is not None and row[2:4] == [1, 1]
            store.insert(CHUNKS_TABLE, [row], CHUNKS_COLUMNS)
        for table, selected in columns.items():
            ours, theirs = (
                f"SELECT {selected} FROM {table}",
                f"SELECT {selected} FROM expected_{table}",
            )
            assert _count(store, f"SELECT count() FROM {table}") == len(odd), table
            assert _count(store, f"SELECT count() FROM ({ours} EXCEPT {theirs})") == 0, table
            assert _count(store, f"SELECT count() FROM ({theirs} EXCEPT {ours})") == 0, table
        extras = store.query(f"SELECT extra FROM {ACTIVE_TABLE} ORDER BY user_id").rows
        assert {"company_size", "country"} == set(extras[0][0])


def _update(
    month: str, dimension: str, segment: str, tickets: int, users: int, version: int
) -> bytes:
    return orjson.dumps(
        {
            "month": month,
            "dimension": dimension,
            "segment": segment,
            "tickets": tickets,
            "active_users": users,
            "cci": domain.cci(tickets, users),
            "contact_rate_pct": domain.contact_rate_pct(tickets, users),
            "version": version,
            "emitted_at": datetime.now(UTC).isoformat(),
        }
    )


def test_trend_view_gives_month_over_month_change_of_the_newest_versions(store: Store) -> None:
    updates = [
        _update("2026-01", "plan", "free", 10, 5, 1),
        _update("2026-02", "plan", "free", 99, 1, 1),  # replaced by version 2
        _update("2026-02", "plan", "free", 9, 3, 2),
        _update("2026-04", "plan", "free", 4, 4, 1),  # no March: no previous month
        _update("2026-04", "plan", "paid", 0, 0, 1),  # emptied segment: left out
    ]
    store.insert(SEGMENT_TABLE, [segment_row(u) for u in updates[::-1]], SEGMENT_COLUMNS)

    trend = store.query(
        "SELECT month, tickets, active_users, cci, previous_cci, cci_change, cci_change_pct "
        "FROM cci_segment_trend ORDER BY dimension, segment, month"
    ).rows

    assert trend == [
        (date(2026, 1, 1), 10, 5, 2.0, None, None, None),
        (date(2026, 2, 1), 9, 3, 3.0, 2.0, 1.0, 50.0),
        (date(2026, 4, 1), 4, 4, 1.0, None, None, None),
    ]


def test_recount_view_counts_the_winning_facts_per_segment(store: Store) -> None:
    _insert_chunks(store, CHUNKS)

    recount = store.query(
        "SELECT month, dimension, segment, tickets, active_users, cci "
        "FROM cci_segment_recount WHERE month = '2026-02-01' ORDER BY dimension, segment"
    ).rows

    # February: u1 active (free), ticket t1 (paid, phone); the channel's denominator is all users.
    assert recount == [
        (date(2026, 2, 1), "all", "all", 1, 1, 1.0),
        (date(2026, 2, 1), "channel", "phone", 1, 1, 1.0),
        (date(2026, 2, 1), "company_size", "1-10", 1, 1, 1.0),
        (date(2026, 2, 1), "plan", "free", 0, 1, 0.0),
        (date(2026, 2, 1), "plan", "paid", 1, 0, None),
        (date(2026, 2, 1), "product", "docs", 1, 1, 1.0),
        (date(2026, 2, 1), "region", "eu", 1, 1, 1.0),
        (date(2026, 2, 1), "tenure", "new", 1, 1, 1.0),
    ]


def test_a_second_process_cannot_open_a_store_in_use(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "clickhouse"
    with open_store(f"chdb://{path}") as store:
        store.apply_schema()
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "from streams.store.clickhouse import open_store\n"
                f"open_store('chdb://{path}', read_only=True)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert other.returncode != 0
    assert "another process" in other.stderr


def test_an_unreachable_server_is_a_store_error_naming_the_cause() -> None:
    from streams.dev.broker import free_port

    with pytest.raises(StoreError, match="Connection refused"):
        open_store(f"http://default:pw@127.0.0.1:{free_port()}/default")


def test_a_cancelled_query_stops_even_before_it_reaches_the_engine(store: Store) -> None:
    store.cancel("cci-query-early")  # asked to stop while it is still being checked

    with pytest.raises(StoreError, match="QUERY_WAS_CANCELLED"):
        store.query("SELECT 1", tag="cci-query-early")
    assert store.query("SELECT 1", tag="cci-query-early").rows == [(1,)]  # the tag is free again


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT number AS n, toDate(number) AS d FROM numbers(10) WHERE n > {low:UInt64} LIMIT 0",
        "SELECT number AS n, toDate(number) AS d FROM numbers(10) WHERE n > {low:UInt64} AND 0",
        "SELECT number AS n, toDate(number) AS d FROM numbers(10) WHERE n > {low:UInt64} "
        "LIMIT 0 OFFSET 5",
    ],
)
def test_an_empty_result_has_its_columns_and_types(store: Store, sql: str) -> None:
    found = store.query(sql, {"low": 3})
    assert (found.columns, found.types, found.rows) == (("n", "d"), ("UInt64", "Date"), [])


def test_the_sinks_own_reads_are_not_kept_waiting_by_analysts(store: Store) -> None:
    # The sink reads the offsets the store holds when partitions are assigned to it; analysts
    # holding every ad hoc slot must not make that read fail (the sink would stop).
    heavy = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 1"
    tags = [f"analyst-{n}" for n in range(QUERY_SLOTS)]
    errors: list[BaseException] = []

    def run(tag: str) -> None:
        try:
            store.query(heavy, tag=tag)
        except BaseException as exc:  # cancelled below: expected
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in tags]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                store.query("SELECT 1")
            except StoreBusy:
                break
            assert time.monotonic() < deadline, "the analysts never took every slot"
            time.sleep(0.05)
        assert store.query("SELECT 1", budget="sink").rows == [(1,)]
    finally:
        for tag in tags:
            store.cancel(tag)
        for thread in threads:
            thread.join(30)
    assert len(errors) == QUERY_SLOTS
