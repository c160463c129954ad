"""Analysts' access to the store: read-only SQL (``cci query``), the monthly CCI report
(``cci report``) and the measured CCI behind ``cci forecast``, shared by the CLI and the worker's
``POST /api/query``.

A chDB engine belongs to one process. While a worker runs, it owns the embedded store, so the CLI
sends the SQL to the worker's web server, which runs it on its own engine; when no worker answers,
the CLI opens the store itself. A server store (``http(s)://``) is always queried directly.
Either way the SQL runs with ``readonly = 1`` (see ``streams/store.py``), and a bad query comes
back as ClickHouse's own error.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from ipaddress import IPv4Address, IPv6Address
from typing import Any
from uuid import UUID

import orjson

from streams import domain
from streams.redaction import redact_text, redact_url, secret_values, url_secrets
from streams.settings import Settings
from streams.store import QueryResult, Store, StoreError, embedded_path, open_store

FORMATS = ("table", "jsonl", "csv")
QUERY_PATH = "/api/query"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
WORKER_TIMEOUT = 300.0  # seconds a query through the worker may take
STORE_STARTING_WAIT = 15.0  # seconds to wait for a worker whose store is still opening


class QueryError(Exception):
    """The query failed; the message is ClickHouse's error (or why no store could run it)."""


# --- values that survive JSON --------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A JSON-representable form of a ClickHouse value, the same whichever way it travelled."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no nan/inf
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(json_value(k)): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_value(v) for v in value]
    return str(value)


def portable(result: QueryResult) -> QueryResult:
    return QueryResult(
        result.columns, result.types, [tuple(json_value(v) for v in row) for row in result.rows]
    )


def result_payload(result: QueryResult) -> dict[str, Any]:
    portable_result = portable(result)
    return {
        "columns": list(portable_result.columns),
        "types": list(portable_result.types),
        "rows": [list(row) for row in portable_result.rows],
    }


def result_from_payload(payload: Mapping[str, Any]) -> QueryResult:
    return QueryResult(
        tuple(payload["columns"]), tuple(payload["types"]), [tuple(r) for r in payload["rows"]]
    )


# --- the worker's side: POST /api/query ----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def _error(status: int, message: str) -> Answer:
    return Answer(status, orjson.dumps({"error": message}))


async def answer_query(
    store: Store | None, body: bytes, own_url: str, remote: str | None
) -> Answer:
    """The worker's answer to ``POST /api/query`` with ``{"sql", "parameters"?, "store"?}``:
    200 with columns, types and rows; 400 with ClickHouse's error; 409 when the caller meant
    another store; 503 while the store is not open; 403 for a caller not on this machine
    (the web server may listen on every address, the query API only serves local analysts)."""
    if remote is not None and remote not in LOOPBACK:
        return _error(403, "the query API answers only on loopback")
    try:
        request = orjson.loads(body)
        sql = request["sql"]
        parameters = request.get("parameters") or {}
        if not isinstance(sql, str) or not isinstance(parameters, dict):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return _error(400, 'expected a JSON body {"sql": "...", "parameters": {...}}')
    wanted = request.get("store")
    if isinstance(wanted, str) and not same_store(wanted, own_url):
        # Neither URL's password is shown: not the worker's, nor the caller's.
        return _error(
            409, f"this worker's store is {redact_url(own_url)}, not {redact_url(wanted)}"
        )
    if store is None:
        return _error(503, "the worker's store is not open (starting or stopping)")

    def run() -> bytes:  # in a thread: a large result must not stall the worker's event loop
        return orjson.dumps(result_payload(store.query(sql, parameters)))

    try:
        return Answer(200, await asyncio.to_thread(run))
    except StoreError as exc:
        return _error(400, redact_text(str(exc), url_secrets(own_url)))


def same_store(a: str, b: str) -> bool:
    try:
        path_a, path_b = embedded_path(a), embedded_path(b)
    except StoreError:
        return False
    if path_a is None or path_b is None:
        return a == b
    return path_a == path_b


# --- the CLI's side ------------------------------------------------------------------------------


def run_query(
    settings: Settings, sql: str, parameters: Mapping[str, Any] | None = None
) -> QueryResult:
    """Run read-only SQL against the configured store: through a running worker that owns the
    embedded engine, else directly. Raises QueryError with ClickHouse's message."""
    parameters = dict(parameters or {})
    if embedded_path(settings.clickhouse_url) is not None:
        answered = _ask_worker(settings, sql, parameters)
        if answered is not None:
            return answered
    try:
        with open_store(settings.clickhouse_url, read_only=True) as store:
            return portable(store.query(sql, parameters))
    except StoreError as exc:
        raise QueryError(redact_text(str(exc), secret_values(settings))) from None


def _worker_url(settings: Settings) -> str:
    host = settings.web_host
    if host in {"0.0.0.0", "::", ""}:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}{QUERY_PATH}"


def _ask_worker(settings: Settings, sql: str, parameters: dict[str, Any]) -> QueryResult | None:
    """The worker's answer, or None when no worker (with this store) listens."""
    body = orjson.dumps({"sql": sql, "parameters": parameters, "store": settings.clickhouse_url})
    deadline = time.monotonic() + STORE_STARTING_WAIT
    while True:
        request = urllib.request.Request(
            _worker_url(settings),
            data=body,
            headers=_worker_headers(settings),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=WORKER_TIMEOUT) as response:
                return result_from_payload(orjson.loads(response.read()))
        except urllib.error.HTTPError as exc:
            status, message = exc.code, _error_message(exc.read())
        except (ConnectionError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError | ConnectionResetError):
                return None  # nothing listens: no worker
            url = _worker_url(settings)
            raise QueryError(f"the worker at {url} did not answer: {reason}") from None
        if status == 409:
            return None  # a worker with another store: ours is free to open
        if status == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        if status == 404:
            message = "the process on CCI_WEB_PORT has no query API (is it a cci worker?)"
        raise QueryError(message)


def _worker_headers(settings: Settings) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if settings.web_token:  # the worker asks for it (streams/web_auth.py)
        headers["Authorization"] = f"Bearer {settings.web_token}"
    return headers


def _error_message(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", errors="replace").strip() or "no message"


# --- output --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]
) -> str:
    """Aligned plain-text columns: numbers to the right, text to the left."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


_NUMERIC_TYPE = ("Int", "UInt", "Float", "Decimal")


def _is_numeric(type_name: str) -> bool:
    bare = type_name.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return bare.startswith(_NUMERIC_TYPE)


def format_result(result: QueryResult, fmt: str) -> str:
    """The result as ``table`` (for people), ``jsonl`` or ``csv`` (for programs; exact values)."""
    if fmt == "jsonl":
        return "\n".join(
            orjson.dumps(dict(zip(result.columns, row, strict=True))).decode()
            for row in result.rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow(
                "" if v is None else orjson.dumps(v).decode() if isinstance(v, dict | list) else v
                for v in row
            )
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    rows = [[_cell(v) for v in row] for row in result.rows]
    table = render_table(result.columns, rows, [_is_numeric(t) for t in result.types])
    return f"{table}\n({len(rows)} row{'' if len(rows) == 1 else 's'})"


# --- the report ----------------------------------------------------------------------------------

REPORT_SQL = """
SELECT month, dimension, segment, tickets, active_users, cci, contact_rate_pct,
       previous_cci, cci_change, cci_change_pct
FROM cci_segment_trend
WHERE month = if({month:String} = '',
                 (SELECT max(month) FROM cci_segment_monthly),
                 toDate(concat({month:String}, '-01')))
  AND ({dimension:String} = '' OR dimension = {dimension:String})
"""


def report_parameters(month: str | None, dimension: str | None) -> dict[str, str]:
    if month:
        domain.month_from_label(month)  # ValueError names the bad value
    return {"month": month or "", "dimension": dimension or ""}


def _dimension_order(dimension: str) -> tuple[int, str]:
    known = (domain.ALL, *domain.PROFILE_DIMENSIONS)
    if dimension in known:
        return known.index(dimension), ""
    if dimension == domain.TENURE:
        return 90, ""
    if dimension == domain.CHANNEL:
        return 91, ""
    return 50, dimension  # extra dimensions, by name


def _segment_order(dimension: str, segment: str) -> tuple[int, str]:
    if dimension == domain.TENURE and segment in domain.TENURE_BUCKETS:
        return domain.TENURE_BUCKETS.index(segment), ""
    return (99 if segment == domain.UNKNOWN else 50), segment


def _signed(value: float | None, digits: int, suffix: str = "") -> str:
    return "" if value is None else f"{value:+.{digits}f}{suffix}"


def render_report(result: QueryResult) -> str:
    """The report query's rows as a terminal table, grouped by dimension."""
    if not result.rows:
        return "no figures for that month (yet)"
    records = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    month = str(records[0]["month"])[:7]
    previous = domain.month_label(domain.month_from_label(month) - 1)
    records.sort(
        key=lambda r: (
            _dimension_order(r["dimension"]),
            _segment_order(r["dimension"], r["segment"]),
        )
    )
    headers = [
        "dimension",
        "segment",
        "tickets",
        "active users",
        "CCI",
        "contact %",
        f"CCI {previous}",
        "change",
        "change %",
    ]
    rows: list[list[str]] = []
    last_dimension = None
    for r in records:
        if last_dimension is not None and r["dimension"] != last_dimension:
            rows.append([""] * len(headers))
        last_dimension = r["dimension"]
        rows.append(
            [
                r["dimension"],
                r["segment"],
                str(r["tickets"]),
                str(r["active_users"]),
                "-" if r["cci"] is None else f"{r['cci']:.4f}",
                "-" if r["contact_rate_pct"] is None else f"{r['contact_rate_pct']:.2f}",
                "" if r["previous_cci"] is None else f"{r['previous_cci']:.4f}",
                _signed(r["cci_change"], 4),
                _signed(r["cci_change_pct"], 1, "%"),
            ]
        )
    numeric = [False, False, True, True, True, True, True, True, True]
    title = f"Customer Contact Index, {month} (change from {previous})"
    return f"{title}\n\n{render_table(headers, rows, numeric)}"


# --- the measured CCI behind `cci forecast` ------------------------------------------------------

# One segment's figure: the given month, or else the latest month before the current one (the
# latest complete month the store has). Months without active users have no CCI and are skipped.
MEASURED_CCI_SQL = """
SELECT formatDateTime(month, '%Y-%m') AS label, tickets, active_users
FROM cci_segment_monthly FINAL
WHERE dimension = {dimension:String}
  AND segment = {segment:String}
  AND active_users > 0
  AND if({month:String} = '',
         month < toDate(concat({current_month:String}, '-01')),
         month = toDate(concat({month:String}, '-01')))
ORDER BY month DESC
LIMIT 1
"""


@dataclass(frozen=True)
class MeasuredCCI:
    month: str
    dimension: str
    segment: str
    tickets: int
    active_users: int
    cci: Fraction  # exact: tickets / active_users


def measured_cci(
    settings: Settings, dimension: str, segment: str, month: str | None, now: datetime
) -> MeasuredCCI | None:
    """The store's CCI of a segment in ``month`` (``YYYY-MM``), or by default in the latest month
    before ``now``'s month (in CCI_TIMEZONE) that has one; None when there is none. ValueError for
    a malformed month, QueryError when the store cannot answer."""
    if month:
        domain.month_from_label(month)  # ValueError names the bad value
    current_month = domain.month_label(domain.month_of(now, settings.zone))
    parameters = {
        "dimension": dimension,
        "segment": segment,
        "month": month or "",
        "current_month": current_month,
    }
    result = run_query(settings, MEASURED_CCI_SQL, parameters)
    if not result.rows:
        return None
    label, tickets, active_users = result.rows[0]
    ratio = domain.cci_ratio(int(tickets), int(active_users))
    if ratio is None:
        return None
    return MeasuredCCI(str(label), dimension, segment, int(tickets), int(active_users), ratio)
