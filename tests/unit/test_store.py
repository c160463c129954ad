"""Pure parts of the ClickHouse store: schema files, URLs, and records → rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import domain
from streams.sink.rows import (
    ACTIVE_COLUMNS,
    SEGMENT_COLUMNS,
    TICKET_COLUMNS,
    VERSION_BASE,
    FactRows,
    segment_row,
)
from streams.store.analyst_query import ANALYST_LIMITS, QUERY_SECONDS
from streams.store.clickhouse import StoreError, open_store
from streams.store.embedded import embedded_path
from streams.store.schema import SCHEMA_DIR, load_migrations, split_statements


def test_statements_end_with_a_line_ending_in_a_semicolon_and_comments_are_not_sent() -> None:
    text = (
        "-- header comment;\n"
        "CREATE TABLE a (x String DEFAULT 'a;b') ENGINE = Memory;\n"
        "\n"
        "-- between\n"
        "CREATE VIEW v AS\n    -- inside;\nSELECT 1;   \n"
        "-- trailing comment only\n"
        ";\n"
    )

    statements = split_statements(text)

    assert statements == [
        "CREATE TABLE a (x String DEFAULT 'a;b') ENGINE = Memory",
        "CREATE VIEW v AS\nSELECT 1",
    ]


def test_the_shipped_schema_loads_in_version_order() -> None:
    migrations = load_migrations(SCHEMA_DIR)

    assert [m.version for m in migrations] == [1, 2, 3, 4, 5, 6]
    assert all(m.statements and len(m.checksum) == 64 for m in migrations)
    ddl = " ".join(s for m in migrations for s in m.statements)
    for table in (
        "cci_segment_monthly",
        "cci_monthly_active_users",
        "cci_tickets",
        "cci_sink_offsets",
    ):
        assert f"CREATE TABLE IF NOT EXISTS {table}" in ddl
    assert "ENGINE = ReplacingMergeTree(version)" in ddl


def test_schema_files_must_be_numbered_and_unique(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "notes.sql").write_text("SELECT 1;\n")
    with pytest.raises(StoreError, match=r"NNN_name\.sql"):
        load_migrations(tmp_path)
    (tmp_path / "notes.sql").unlink()
    (tmp_path / "01_b.sql").write_text("SELECT 1;\n")
    with pytest.raises(StoreError, match="version 1"):
        load_migrations(tmp_path)
    with pytest.raises(StoreError, match="no schema files"):
        load_migrations(tmp_path / "empty")


def test_embedded_path_of_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert embedded_path("chdb://.cci/clickhouse") == tmp_path / ".cci" / "clickhouse"
    assert embedded_path("chdb:///var/lib/cci/ch") == Path("/var/lib/cci/ch")
    assert embedded_path("http://u:p@ch:8123/db") is None
    with pytest.raises(StoreError, match="needs a directory"):
        embedded_path("chdb://memory")


def test_a_cci_update_becomes_one_segment_row() -> None:
    value = {
        "month": "2026-02",
        "dimension": "channel",
        "segment": "email",
        "tickets": 4,
        "active_users": 0,
        "cci": None,
        "contact_rate_pct": None,
        "version": 1_771_000_000_000_123,
        "emitted_at": "2026-02-10T08:00:01.250Z",
    }

    row = segment_row(orjson.dumps(value))

    assert dict(zip(SEGMENT_COLUMNS, row, strict=True)) == {
        "month": date(2026, 2, 1),
        "dimension": "channel",
        "segment": "email",
        "tickets": 4,
        "active_users": 0,
        "cci": None,
        "contact_rate_pct": None,
        "version": 1_771_000_000_000_123,
        "updated_at": datetime(2026, 2, 10, 8, 0, 1, 250000, tzinfo=UTC),
        "band": None,  # a record from before bands (and a figure without users) has none
    }
    with_band = segment_row(orjson.dumps({**value, "active_users": 10, "band": "above"}))
    assert dict(zip(SEGMENT_COLUMNS, with_band, strict=True))["band"] == "above"


def test_a_chunk_becomes_user_and_ticket_rows_with_extra_dimensions_in_a_map() -> None:
    facts = FactRows(domain.user_dimensions(("company_size", "team")))
    attributes = ["paid", "docs", "eu", "11-50", "core", "3-11m"]
    chunk = {
        "seq": 7,
        "a": [["u1", 1_000, attributes]],
        "t": [["t9", 2_000, [*attributes, "phone"], "u1"]],
    }

    users, tickets = facts.chunk_rows(b"2026-03@7", orjson.dumps(chunk))

    segments = {
        "plan": "paid",
        "product": "docs",
        "region": "eu",
        "tenure": "3-11m",
        "extra": {"company_size": "11-50", "team": "core"},
    }
    assert [dict(zip(ACTIVE_COLUMNS, row, strict=True)) for row in users] == [
        {
            "month": date(2026, 3, 1),
            "user_id": "u1",
            "active_at": 1_000,
            **segments,
            "version": VERSION_BASE - 1_000,
        }
    ]
    assert [dict(zip(TICKET_COLUMNS, row, strict=True)) for row in tickets] == [
        {
            "ticket_id": "t9",
            "user_id": "u1",
            "month": date(2026, 3, 1),
            "created_at": 2_000,
            "channel": "phone",
            **segments,
            "version": VERSION_BASE - 2_000,
        }
    ]


def test_an_earlier_fact_has_the_higher_version() -> None:
    facts = FactRows(domain.user_dimensions(()))
    attributes = ["free", "docs", "eu", "new"]

    def version(ts: int) -> int:
        chunk = {"a": [["u", ts, attributes]], "t": []}
        users, _ = facts.chunk_rows(b"2026-03@1", orjson.dumps(chunk))
        return int(users[0][-1])

    assert version(499) > version(500)


def test_a_chunk_written_with_other_dimensions_is_refused() -> None:
    facts = FactRows(domain.user_dimensions(()))
    chunk = {"a": [["u1", 1, ["paid", "docs", "eu", "11-50", "new"]]], "t": []}

    with pytest.raises(ValueError, match="CCI_EXTRA_DIMENSIONS"):
        facts.chunk_rows(b"2026-03@1", orjson.dumps(chunk))


def test_a_server_url_reaches_clickhouse_connect_as_is_with_readonly_for_queries() -> None:
    calls: list[dict[str, Any]] = []

    class Client:
        def close(self) -> None:
            pass

    def factory(**kwargs: Any) -> Client:
        calls.append(kwargs)
        return Client()

    url = "https://cci:s3cret@ch.example:8443/analytics"
    with open_store(url, read_only=True, client_factory=factory) as store:
        assert not store.embedded
    with open_store(url, client_factory=factory):
        pass

    analyst, writer = calls
    assert writer == {"dsn": url}
    assert analyst["dsn"] == url and analyst["autogenerate_session_id"] is False
    # The limits first, readonly last: once it is set, no setting can change.
    assert list(analyst["settings"]) == [*ANALYST_LIMITS, "log_comment", "readonly"]
    assert analyst["settings"]["max_execution_time"] == QUERY_SECONDS
    assert analyst["settings"]["readonly"] == 1


def test_rows_without_extra_dimensions_are_those_of_the_general_path() -> None:
    """The one-expression rows of the usual case equal the per-row path's, row for row."""
    plain = FactRows(domain.user_dimensions(()))
    general = FactRows(domain.user_dimensions(()))
    general._plain = False  # the path every worker with extra dimensions takes
    chunk = orjson.dumps(
        {
            "seq": 3,
            "a": [["u1", 1_000, ["paid", "docs", "eu", "new"]], ["u2", 5, ["free", "a", "b", "c"]]],
            "t": [
                ["t1", 2_000, ["paid", "docs", "eu", "new", "phone"], "u1"],
                ["t2", 7, ["free", "a", "b", "c", "email"]],  # written before tickets had users
            ],
        }
    )

    assert plain._plain
    assert plain.chunk_rows(b"2026-03@3", chunk) == general.chunk_rows(b"2026-03@3", chunk)
    wrong = orjson.dumps({"a": [], "t": [["t1", 2, ["paid", "docs", "eu", "new"], "u1"]]})
    with pytest.raises(ValueError, match="4 attributes where 5 were expected"):
        plain.chunk_rows(b"2026-03@1", wrong)
