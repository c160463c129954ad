"""How one analyst statement runs, on the client ``Store.query`` opened for it alone: the limits
its session carries (``ANALYST_LIMITS``) and the queries that may run at once (``BUDGET_SLOTS``);
the checks before it runs (parsed by ClickHouse, its ``EXPLAIN AST`` judged by
``streams/store/query_policy.py``); and its result, read within ``QUERY_RESULT_BYTES`` before any
Python value is made (docs/security.md, "Query API").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from clickhouse_connect.driver.binding import bind_query
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.ctypes import RespBuffCls
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.transform import NativeTransform

from streams.store import native_cost, query_policy
from streams.store.errors import QueryRefused, StoreError

QUERY_SECONDS = 300  # longest a read-only query may run
QUERY_MEMORY_BYTES = 256 * 1024 * 1024  # most memory one analyst query may take in the engine
QUERY_RESULT_ROWS = 100_000  # most rows a query may return (more is an error: add a LIMIT)
QUERY_RESULT_BYTES = 32 * 1024 * 1024  # most bytes a query may return, uncompressed
QUERY_THREADS = 2  # threads one analyst query may use
QUERY_BLOCK_ROWS = 8192  # rows per result block: the result is counted block by block
QUERY_SLOTS = 2  # ad hoc analyst queries running at once in one process
# /api/forecast's queries at once, apart from the ad hoc ones, so that neither kind can starve the
# other; (sum of BUDGET_SLOTS) x QUERY_MEMORY_BYTES is the most all reads may take in the engine.
FORECAST_QUERY_SLOTS = 2
# The sink's own reads (the offsets the store holds, once per assignment): never kept waiting,
# and failing, because analysts hold every ad hoc slot.
SINK_QUERY_SLOTS = 1
QueryBudget = Literal["ad hoc", "forecast", "sink"]
BUDGET_SLOTS: dict[QueryBudget, int] = {
    "ad hoc": QUERY_SLOTS,
    "forecast": FORECAST_QUERY_SLOTS,
    "sink": SINK_QUERY_SLOTS,
}
# Applied in this order, then log_comment (the query's tag) and readonly = 1 last: once readonly
# is set, no setting can change, so a query's own SETTINGS clause cannot lift these.
ANALYST_LIMITS: dict[str, Any] = {
    "max_memory_usage": QUERY_MEMORY_BYTES,
    "max_result_rows": QUERY_RESULT_ROWS,
    "max_result_bytes": QUERY_RESULT_BYTES,
    "result_overflow_mode": "throw",
    "max_execution_time": QUERY_SECONDS,
    "max_threads": QUERY_THREADS,
    "max_block_size": QUERY_BLOCK_ROWS,
    "allow_introspection_functions": 0,  # addressToSymbol & co. read the process's memory map
}


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]


_ENDS_IN_LIMIT_0 = re.compile(r"\bLIMIT\s+0\s*$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


def checked_query(
    client: Client, sql: str, parameters: dict[str, Any], cancelled: Callable[[], bool]
) -> QueryResult:
    """Parse ``sql`` with ClickHouse, judge it (streams/store/query_policy.py), then run the text
    that was judged, with values bound by the engine (never pasted into the text)."""
    if not sql.strip():
        raise QueryRefused("empty query")
    try:
        # One statement or a syntax error (ClickHouse refuses "multi-statements" here). The text
        # travels as a value, so nothing in it runs.
        canonical = client.query(
            "SELECT formatQuerySingleLine({statement:String})", parameters={"statement": sql}
        ).result_rows[0][0]
    except ClickHouseError as exc:
        raise QueryRefused(str(exc)) from exc
    if parameters:
        # clickhouse-connect pastes values into a text without {name:Type} placeholders (client-
        # side binding): refuse that, so what runs is exactly the text that was judged.
        try:
            bound = bool(_PLACEHOLDER.search(canonical)) and (
                bind_query(canonical, parameters)[0] == canonical
            )
        except (ClickHouseError, TypeError, ValueError) as exc:  # a value it cannot bind
            raise QueryRefused(f"parameters: {exc}") from exc
        if not bound:
            raise QueryRefused("parameters need {name:Type} placeholders in the query")
    try:
        explain = f"EXPLAIN AST {canonical}"
        if _ENDS_IN_LIMIT_0.search(canonical):
            # clickhouse-connect takes a text ending in LIMIT 0 for a probe of column names (and
            # the EXPLAIN failed); with the FORMAT it would append written out, it is not.
            explain += "\nFORMAT Native"
        explained = client.query(explain, parameters=parameters or None)
    except ClickHouseError as exc:
        raise QueryRefused(str(exc)) from exc
    ast = _without_transport_format([row[0] for row in explained.result_rows])
    reason = query_policy.refusal(ast, canonical)
    if reason is not None:
        raise QueryRefused(f"refused: {reason}")
    if cancelled():
        raise StoreError(_CANCELLED)
    try:
        if ast.startswith("SelectWithUnionQuery"):
            return _bounded_result(client, canonical, parameters, cancelled)
        # SHOW TABLES, DESCRIBE, EXISTS: small answers, and chDB streams only SELECTs.
        result = client.query(canonical, parameters=parameters or None)
    except ClickHouseError as exc:
        raise StoreError(str(exc)) from exc
    except RuntimeError as exc:
        # chDB's streaming reports an engine error (e.g. FUNCTION_NOT_ALLOWED) as its own
        # ChdbError, a RuntimeError: the asker gets it like any other engine error.
        raise StoreError(str(exc)) from exc
    return QueryResult(
        tuple(result.column_names),
        tuple(t.name for t in result.column_types),
        [tuple(row) for row in result.result_rows],
    )


_CANCELLED = "the query was cancelled (QUERY_WAS_CANCELLED)"


def _bounded_result(
    client: Client, sql: str, parameters: dict[str, Any], cancelled: Callable[[], bool]
) -> QueryResult:
    """The rows, read as ClickHouse's Native bytes and stopped at QUERY_RESULT_BYTES before any
    Python value is made: as sent, and as Python values will cost (streams/store/native_cost.py).
    ClickHouse's own max_result_bytes counts a constant column (``repeat('x', 1000)``) as one
    value and a date as 2 bytes: 16 million dates in one array passed it and took a gigabyte of
    the process to convert before the old, per-block count refused them."""
    data = bytearray()
    walk = native_cost.Walk()
    with contextlib.closing(
        client.raw_stream(sql, parameters=parameters or None, fmt="Native")
    ) as stream:
        while chunk := stream.read(RESULT_CHUNK_BYTES):
            if cancelled():
                raise StoreError(_CANCELLED)
            data += chunk
            native_cost.walk_blocks(data, walk, QUERY_RESULT_BYTES)
            if len(data) > QUERY_RESULT_BYTES or walk.cost > QUERY_RESULT_BYTES:
                raise StoreError(_TOO_BIG)
    native_cost.walk_blocks(data, walk, QUERY_RESULT_BYTES, final=True)
    if walk.cost > QUERY_RESULT_BYTES:
        raise StoreError(_TOO_BIG)
    if walk.end != len(data):
        # An HTTP server reports an error met while sending after the rows it sent.
        tail = bytes(data[walk.end :][-4096:]).decode("utf-8", errors="replace")
        found = tail.find("Code: ")
        raise StoreError(tail[found:].strip() if found >= 0 else "the result was cut short")
    if not data:
        # chDB sends no block at all for an empty result: its columns come from DESCRIBE, which
        # does not run the statement.
        described = client.query(f"DESCRIBE TABLE ({sql})", parameters=parameters or None)
        return QueryResult(
            tuple(str(row[0]) for row in described.result_rows),
            tuple(str(row[1]) for row in described.result_rows),
            [],
        )
    context = client.create_query_context(query=sql, parameters=parameters or None)
    result = NativeTransform.parse_response(RespBuffCls(_Bytes(bytes(data))), context)
    return QueryResult(
        tuple(result.column_names),
        tuple(t.name for t in result.column_types),
        [tuple(row) for row in result.result_rows],
    )


RESULT_CHUNK_BYTES = 1 << 20
_TOO_BIG = (
    f"Limit for result exceeded, max bytes: {QUERY_RESULT_BYTES / 2**20:.2f} MiB "
    "(TOO_MANY_ROWS_OR_BYTES): add a LIMIT or aggregate"
)


class _Bytes:
    """A whole result's bytes as the source clickhouse-connect's Native parser reads."""

    last_message: bytes | None = None
    exception_tag: str | None = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def gen(self) -> Iterator[bytes]:
        if self.data:
            yield self.data

    def close(self) -> None:
        self.data = b""


def _without_transport_format(lines: list[str]) -> str:
    """The AST of the statement alone. clickhouse-connect appends ``FORMAT Native`` to what it
    sends, so the EXPLAIN sees it as the statement's last clause (a FORMAT of the analyst's own
    would have been a syntax error next to it)."""
    children = re.match(r"^(\w+) \(children (\d+)\)$", lines[0]) if lines else None
    if children is None or lines[-1] != " Identifier Native":
        return "\n".join(lines)
    count = int(children.group(2)) - 1
    return "\n".join([f"{children.group(1)} (children {count})", *lines[1:-1]])
