"""The query API's pure parts: JSON-safe values, output formats, the report, and the worker's
answers to POST /api/query (with an in-memory stand-in for the store)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest

from streams.store.analyst_query import QueryResult
from streams.store.clickhouse import StoreError
from streams.store.query import (
    answer_query,
    json_value,
    result_from_payload,
    result_payload,
    same_store,
)
from streams.store.report import format_result, render_report, report_parameters
from streams.web.guard import allowed_hosts, refusal

RESULT = QueryResult(
    columns=("month", "segment", "tickets", "cci", "extra"),
    types=("Date", "String", "UInt64", "Nullable(Float64)", "Map(String, String)"),
    rows=[
        (date(2026, 1, 1), "free", 12, 0.30434782608695654, {"size": "1-10"}),
        (date(2026, 2, 1), 'pa"id, x', 0, None, {}),
    ],
)


def test_values_become_json_values_and_survive_the_round_trip() -> None:
    assert json_value(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05"
    assert json_value(Decimal("1.50")) == "1.50"
    assert json_value(UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_value(float("nan")) == "nan"
    assert json_value({1: (date(2026, 1, 1),)}) == {"1": ["2026-01-01"]}

    payload = orjson.loads(orjson.dumps(result_payload(RESULT)))
    back = result_from_payload(payload)

    assert back.columns == RESULT.columns and back.types == RESULT.types
    assert back.rows[0] == ("2026-01-01", "free", 12, 0.30434782608695654, {"size": "1-10"})


def test_jsonl_and_csv_keep_values_exact() -> None:
    jsonl = format_result(RESULT, "jsonl").splitlines()
    csv = format_result(RESULT, "csv").splitlines()

    assert orjson.loads(jsonl[0])["cci"] == 0.30434782608695654
    assert orjson.loads(jsonl[1])["cci"] is None
    assert csv[0] == "month,segment,tickets,cci,extra"
    assert csv[1] == '2026-01-01,free,12,0.30434782608695654,"{""size"":""1-10""}"'
    assert csv[2] == '2026-02-01,"pa""id, x",0,,{}'


def test_table_aligns_numbers_right_and_counts_rows() -> None:
    lines = format_result(RESULT, "table").splitlines()

    assert lines[0].split() == ["month", "segment", "tickets", "cci", "extra"]
    assert lines[2].startswith("2026-01-01  free") and "0.304348" in lines[2]
    assert "NULL" in lines[3]
    assert lines[-1] == "(2 rows)"
    tickets_end = lines[0].index("tickets") + len("tickets")
    assert lines[2][tickets_end - 2 : tickets_end] == "12"  # right-aligned under the header
    with pytest.raises(ValueError, match="unknown format"):
        format_result(RESULT, "xml")


def _report_result(rows: list[tuple]) -> QueryResult:
    columns = (
        "month",
        "dimension",
        "segment",
        "tickets",
        "active_users",
        "cci",
        "contact_rate_pct",
        "band",
        "previous_cci",
        "cci_change",
        "cci_change_pct",
    )
    return QueryResult(columns, ("",) * len(columns), rows)


def test_report_groups_dimensions_in_domain_order_with_tenure_buckets_in_order() -> None:
    rows = [
        ("2026-03-01", "tenure", "12m+", 1, 10, 0.1, 10.0, "below", None, None, None),
        ("2026-03-01", "channel", "web", 2, 20, 0.1, 10.0, "below", 0.2, -0.1, -50.0),
        ("2026-03-01", "tenure", "new", 5, 10, 0.5, 50.0, "above", 0.25, 0.25, 100.0),
        ("2026-03-01", "plan", "free", 3, 0, None, None, None, None, None, None),
        ("2026-03-01", "all", "all", 6, 20, 0.3, 30.0, "within", 0.3, 0.0, 0.0),
    ]

    text = render_report(_report_result(rows))
    lines = text.splitlines()

    assert lines[0] == "Customer Contact Index, 2026-03 (change from 2026-02)"
    order = [line.split()[:2] for line in lines[4:] if line.strip()]
    assert order == [
        ["all", "all"],
        ["plan", "free"],
        ["tenure", "new"],
        ["tenure", "12m+"],
        ["channel", "web"],
    ]
    new = next(line for line in lines if line.startswith("tenure     new"))
    assert new.split()[2:] == [
        "5", "10", "0.5000", "50.00", "above", "0.2500", "+0.2500", "+100.0%"
    ]  # fmt: skip
    everyone = next(line for line in lines if line.startswith("all"))
    assert everyone.split()[6] == "within"
    free = next(line for line in lines if line.startswith("plan"))
    assert free.split()[2:] == ["3", "0", "-", "-", "-"]  # no users: no rate, no band
    assert render_report(_report_result([])) == "no figures for that month (yet)"


def test_report_parameters_check_the_month() -> None:
    assert report_parameters(None, None) == {"month": "", "dimension": ""}
    assert report_parameters("2026-04", "plan") == {"month": "2026-04", "dimension": "plan"}
    with pytest.raises(ValueError, match="YYYY-MM"):
        report_parameters("April", None)


def test_same_store_compares_embedded_paths_not_spellings(tmp_path: Any) -> None:
    assert same_store(f"chdb://{tmp_path}/ch", f"chdb://{tmp_path}/x/../ch/")
    assert not same_store(f"chdb://{tmp_path}/ch", f"chdb://{tmp_path}/other")
    assert not same_store(f"chdb://{tmp_path}/ch", "http://ch:8123/db")
    assert not same_store("chdb://memory", f"chdb://{tmp_path}/ch")


class AnsweringStore:
    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, Mapping[str, Any]]] = []

    def query(self, sql: str, parameters: Mapping[str, Any], tag: str = "") -> QueryResult:
        self.calls.append((sql, parameters))
        if self.error:
            raise StoreError(self.error)
        return RESULT


URL = "chdb:///var/lib/cci/clickhouse"


HOSTS = allowed_hosts("127.0.0.1", 6066)
JSON = {"Host": "127.0.0.1:6066", "Content-Type": "application/json"}


async def _answer(
    store: Any, body: Any, remote: str | None = "127.0.0.1", headers: dict[str, str] = JSON
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    answer = await answer_query(store, raw, URL, remote, headers=headers, allowed_hosts=HOSTS)
    return answer.status, orjson.loads(answer.body)


async def test_the_worker_answers_a_query_with_columns_types_and_rows() -> None:
    store = AnsweringStore()

    status, body = await _answer(store, {"sql": "SELECT 1", "parameters": {"m": "2026-01"}})

    assert status == 200
    assert body["columns"] == list(RESULT.columns) and body["rows"][0][0] == "2026-01-01"
    assert store.calls == [("SELECT 1", {"m": "2026-01"})]


async def test_the_worker_refuses_what_it_should_not_answer() -> None:
    error = "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. (UNKNOWN_TABLE)"
    assert await _answer(AnsweringStore(error), {"sql": "SELECT * FROM nope"}) == (
        400,
        {"error": error},
    )
    assert (await _answer(AnsweringStore(), b"not json"))[0] == 400
    assert (await _answer(AnsweringStore(), {"query": "SELECT 1"}))[0] == 400
    assert (await _answer(None, {"sql": "SELECT 1"}))[0] == 503
    assert (await _answer(AnsweringStore(), {"sql": "SELECT 1"}, remote="10.1.2.3"))[0] == 403
    status, body = await _answer(AnsweringStore(), {"sql": "SELECT 1", "store": "chdb:///other"})
    assert status == 409 and "/other" in body["error"]
    assert (
        await _answer(
            AnsweringStore(), {"sql": "SELECT 1"}, headers={**JSON, "Content-Type": "text/plain"}
        )
    )[0] == 415
    assert (
        await _answer(
            AnsweringStore(), {"sql": "SELECT 1"}, headers={**JSON, "Origin": "http://a.example"}
        )
    )[0] == 403


def test_only_the_workers_own_host_and_origin_are_answered() -> None:
    hosts = allowed_hosts("0.0.0.0", 6066, ("cci.example.com:6066",))

    assert hosts == {"127.0.0.1:6066", "localhost:6066", "[::1]:6066", "cci.example.com:6066"}
    assert allowed_hosts("::1", 7000) >= {"[::1]:7000"}
    assert refusal({"Host": "LOCALHOST:6066"}, hosts) is None
    assert (
        refusal({"Host": "cci.example.com:6066", "Origin": "https://cci.example.com:6066"}, hosts)
        is None
    )
    for host in ("rebound.example:6066", "127.0.0.1:6067"):
        assert refusal({"Host": host}, hosts) == (
            f"Host {host!r} is not this worker's address (see CCI_WEB_ALLOWED_HOSTS)"
        )
    assert refusal({}, hosts) == (
        "Host '(none)' is not this worker's address (see CCI_WEB_ALLOWED_HOSTS)"
    )
    for origin in ("http://evil.example", "null", "file://127.0.0.1:6066"):
        assert refusal({"Host": "127.0.0.1:6066", "Origin": origin}, hosts) == (
            f"Origin {origin!r} is not this worker's own"
        )
