"""Analysts' access to the store: read-only SQL (``cci query``, ``cci report``) and the measured
CCI behind ``cci forecast``, shared by the CLI and the worker's ``POST /api/query``; how results
are shown is ``streams/store/report.py``'s.

A chDB engine belongs to one process. While a worker runs, it owns the embedded store, so the CLI
sends the SQL to the worker's web server, which runs it on its own engine; when no worker answers,
the CLI opens the store itself. A server store (``http(s)://``) is always queried directly.
Either way the SQL runs as an analyst query (``Store.query``: one read-only statement, checked,
bounded, isolated; see ``streams/store/clickhouse.py``), and a bad query comes back as ClickHouse's
own error or the reason it was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from typing import Any
from uuid import UUID

import orjson

from streams import domain
from streams.forecast.output import decimal_text
from streams.forecast.parameters import Request
from streams.forecast.staffing import PeriodPlan, plan
from streams.forecast.trend import fit_trend, period_months
from streams.redaction import redact_text, redact_url, secret_values, url_secrets
from streams.settings import Settings
from streams.store.analyst_query import QueryResult
from streams.store.clickhouse import Store, StoreBusy, StoreError, open_store
from streams.store.embedded import embedded_path
from streams.web import guard as web_guard
from streams.web import json_body

log = logging.getLogger("streams.store.query")

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


DISCONNECT_POLL = 0.2  # seconds between checks that the asker of a running query is still there


async def answer_query(
    store: Store | None,
    body: bytes,
    own_url: str,
    remote: str | None,
    *,
    headers: Mapping[str, str],
    allowed_hosts: frozenset[str],
    gone: Callable[[], bool] = lambda: False,
) -> Answer:
    """The worker's answer to ``POST /api/query`` with ``{"sql", "parameters"?, "store"?}``:
    200 with columns, types and rows; 400 with ClickHouse's error or why the statement may not
    run, or for a body that is not strict JSON (a key twice: json_body); 403 for a caller not
    on this machine (the web server may listen on every address, the query API only serves local
    analysts) or a request from another site (web_guard); 409 when the caller meant another
    store; 415 for a body that is not declared JSON; 429 when QUERY_SLOTS queries run already;
    503 while the store is not open. A query whose asker went away (``gone``) is cancelled."""
    if remote is not None and remote not in LOOPBACK:
        return _error(403, "the query API answers only on loopback")
    refused = web_guard.refusal(headers, allowed_hosts)
    if refused is not None:
        return _error(403, refused)
    content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(415, "the query API takes Content-Type: application/json")
    try:
        request = json_body.parse(body)
    except json_body.BadBody as exc:
        return _error(400, str(exc))
    try:
        sql = request["sql"]
        parameters = request.get("parameters") or {}
        if not isinstance(sql, str) or not isinstance(parameters, dict):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        return _error(400, 'expected a JSON body {"sql": "...", "parameters": {...}}')
    wanted = request.get("store")
    if isinstance(wanted, str) and not same_store(wanted, own_url):
        # Neither URL's password is shown: not the worker's, nor the caller's.
        return _error(
            409, f"this worker's store is {redact_url(own_url)}, not {redact_url(wanted)}"
        )
    if store is None:
        return _error(503, "the worker's store is not open (starting or stopping)")

    tag = f"cci-query-{uuid.uuid4()}"

    def run() -> bytes:  # in a thread: a large result must not stall the worker's event loop
        return orjson.dumps(result_payload(store.query(sql, parameters, tag=tag)))

    running = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while not running.done():
            await asyncio.wait({running}, timeout=DISCONNECT_POLL)
            if not running.done() and gone():
                log.info("the asker of query %s went away: cancelling it", tag)
                await _stop(store, tag, running)
                return _error(499, "the asker went away")  # nobody reads it
        return Answer(200, running.result())
    except StoreBusy as exc:
        return _error(429, str(exc))
    except StoreError as exc:
        return _error(400, redact_text(str(exc), url_secrets(own_url)))
    except asyncio.CancelledError:  # the worker stops, or the web server dropped the request
        await asyncio.shield(_stop(store, tag, running))
        raise


async def answer_request(
    request: Any, store: Store | None, own_url: str, allowed_hosts: frozenset[str]
) -> Answer:
    """``answer_query`` for an aiohttp request (the worker's route)."""

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return await answer_query(
        store,
        await request.read(),
        own_url,
        request.remote,
        headers=request.headers,
        allowed_hosts=allowed_hosts,
        gone=gone,
    )


async def _stop(store: Store, tag: str, running: asyncio.Future[bytes]) -> None:
    """Kill the query tagged ``tag`` and wait until its thread is done (its slot is free)."""
    try:
        await asyncio.to_thread(store.cancel, tag)
    except StoreError:
        log.warning("could not cancel query %s", tag, exc_info=True)
    with contextlib.suppress(StoreError):
        await running


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
    if settings.web_token:  # the worker asks for it (streams/web/auth.py)
        headers["Authorization"] = f"Bearer {settings.web_token}"
    return headers


def _error_message(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", errors="replace").strip() or "no message"


# --- the measured CCI behind `cci forecast` ------------------------------------------------------

# The N latest complete months of a segment (or the N months up to {month}) that have active users,
# newest first, with their figures: the trend of `cci forecast --trend-months`, and (N = 1) the
# measured CCI. Months without active users have no CCI and are skipped.
TREND_SQL = """
SELECT formatDateTime(month, '%Y-%m') AS label, tickets, active_users
FROM cci_segment_monthly FINAL
WHERE dimension = {dimension:String}
  AND segment = {segment:String}
  AND active_users > 0
  AND if({month:String} = '',
         month < toDate(concat({current_month:String}, '-01')),
         month <= toDate(concat({month:String}, '-01')))
ORDER BY month DESC
LIMIT {months:UInt32}
"""


@dataclass(frozen=True)
class MeasuredCCI:
    month: str
    dimension: str
    segment: str
    tickets: int
    active_users: int
    cci: Fraction  # exact: tickets / active_users


Runner = Callable[[str, Mapping[str, Any]], QueryResult]


def measured_cci(
    settings: Settings,
    dimension: str,
    segment: str,
    month: str | None,
    now: datetime,
    run: Runner | None = None,
) -> MeasuredCCI | None:
    """The store's CCI of a segment in ``month`` (``YYYY-MM``), or by default in the latest month
    before ``now``'s month (in CCI_TIMEZONE) that has one; None when there is none. ValueError for
    a malformed month, QueryError when the store cannot answer. ``run`` runs the SQL (default:
    ``run_query``, through a running worker or on the store itself)."""
    if month:
        domain.month_from_label(month)  # ValueError names the bad value
    current_month = domain.month_label(domain.month_of(now, settings.zone))
    parameters = {
        "dimension": dimension,
        "segment": segment,
        "month": month or "",
        "current_month": current_month,
        "months": 1,
    }
    # The newest month up to ``month`` that has active users: ``month``'s figure if it has one.
    result = (run or partial(run_query, settings))(TREND_SQL, parameters)
    if not result.rows:
        return None
    label, tickets, active_users = result.rows[0]
    if month and domain.month_from_label(str(label)) != domain.month_from_label(month):
        return None  # ``month`` itself has no figure
    ratio = domain.cci_ratio(int(tickets), int(active_users))
    if ratio is None:
        return None
    return MeasuredCCI(str(label), dimension, segment, int(tickets), int(active_users), ratio)


# --- the plan behind `cci forecast` and `GET /api/forecast` ------------------------------------


class NoFigure(Exception):
    """The store has no figure to plan with; the message says which and what to do."""


def forecast_plan(
    settings: Settings,
    request: Request,
    now: datetime,
    run: Runner | None = None,
    name: Callable[[str], str] = lambda parameter: parameter,
) -> tuple[list[PeriodPlan], str]:
    """The plan of ``request`` and a line saying where its CCI comes from: the given CCI, the
    store's newest complete month (or ``request.month``), or a trend over the newest months.
    NoFigure when the store has nothing to plan with (``name`` spells the parameters it
    suggests); QueryError when the store cannot answer."""
    if request.cci is not None:
        plans = plan(
            request.labels,
            request.customers,
            request.cci,
            request.tickets_per_agent,
            request.what_if,
        )
        return plans, f"CCI {decimal_text(request.cci, 4, trim=True)} (--cci)"
    segment_name = f"{request.dimension}|{request.segment}"
    when = f"in {request.month}" if request.month else "in any month before this one"
    if request.trend_months is not None:
        return _trend_plan(settings, request, now, run or partial(run_query, settings), name)
    measured = measured_cci(settings, request.dimension, request.segment, request.month, now, run)
    if measured is None:
        raise NoFigure(
            f"no CCI for {segment_name} {when} (a month needs active users); check the segment "
            f"with `cci report`, or give {name('cci')}"
        )
    plans = plan(
        request.labels,
        request.customers,
        measured.cci,
        request.tickets_per_agent,
        request.what_if,
    )
    source = (
        f"CCI {decimal_text(measured.cci, 4)} measured for "
        f"{segment_name} in {measured.month} "
        f"({measured.tickets} tickets / {measured.active_users} active users)"
    )
    return plans, source


def _trend_plan(
    settings: Settings,
    request: Request,
    now: datetime,
    run: Runner,
    name: Callable[[str], str],
) -> tuple[list[PeriodPlan], str]:
    wanted = request.trend_months
    assert wanted is not None
    current = domain.month_of(now, settings.zone)
    parameters = {
        "dimension": request.dimension,
        "segment": request.segment,
        "month": request.month or "",
        "current_month": domain.month_label(current),
        "months": wanted,
    }
    rows = run(TREND_SQL, parameters).rows
    points = []
    for label, tickets, active_users in rows:
        ratio = domain.cci_ratio(int(tickets), int(active_users))
        if ratio is not None:
            points.append((domain.month_from_label(str(label)), ratio))
    segment_name = f"{request.dimension}|{request.segment}"
    if len(points) < wanted:
        up_to = f"up to {request.month}" if request.month else "before this one"
        raise NoFigure(
            f"a {wanted}-month trend of {segment_name} needs {wanted} months with active users "
            f"{up_to}; the store has {len(points)}. Give a smaller {name('trend_months')}, or "
            f"{name('cci')}"
        )
    trend = fit_trend(points)
    # Period 1 is this month, or the month after the chosen --month: where the plan starts.
    first = domain.month_from_label(request.month) + 1 if request.month else current
    months = period_months(first, request.unit, len(request.customers))
    ccis = [trend.at(month) for month in months]
    plans = plan(
        request.labels, request.customers, ccis, request.tickets_per_agent, request.what_if
    )
    source = (
        f"CCI trend of {segment_name}: least squares over {trend.points} months "
        f"{domain.month_label(trend.first)}..{domain.month_label(trend.last)}, "
        f"{decimal_text(trend.level, 4)} in {domain.month_label(trend.last)} "
        f"{'+' if trend.slope >= 0 else '-'}{decimal_text(abs(trend.slope), 4)} a month; "
        f"projected to the first month of each period from {domain.month_label(months[0])}"
    )
    return plans, source
