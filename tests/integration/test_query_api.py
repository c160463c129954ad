"""POST /api/query as an attacker meets it: the worker's own route code (``answer_request``) on a
real aiohttp server, over real sockets, on the real ClickHouse engine (chDB, in this process)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from streams.dev.broker import free_port
from streams.settings import load_settings
from streams.store import query
from streams.store.analyst_query import FORECAST_QUERY_SLOTS, QUERY_SLOTS
from streams.store.clickhouse import Store, StoreBusy, open_store
from streams.web import forecast as forecast_web
from streams.web import guard as web_guard

HEAVY = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 1"


class Api:
    def __init__(self, port: int, store: Store) -> None:
        self.port, self.store = port, store
        self.url = f"http://127.0.0.1:{port}{query.QUERY_PATH}"

    async def forecast(self, parameters: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{forecast_web.API_FORECAST_PATH}?{parameters}"
        async with (
            ClientSession(timeout=ClientTimeout(total=30)) as session,
            session.get(url) as response,
        ):
            return response.status, orjson.loads(await response.read())

    async def post(
        self, body: Any, headers: dict[str, str] | None = None, timeout: float = 60
    ) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        sent = {"Content-Type": "application/json", **(headers or {})}
        async with (
            ClientSession(timeout=ClientTimeout(total=timeout)) as session,
            session.post(self.url, data=raw, headers=sent) as response,
        ):
            return response.status, orjson.loads(await response.read())

    async def running(self, sql: str) -> int:
        """How many queries with this text the engine is running now."""
        found = self.store._writer_client().query(
            "SELECT count() FROM system.processes "
            "WHERE query LIKE {q:String} AND query_id != queryID()",
            parameters={"q": f"%{sql}%"},
        )
        return int(found.result_rows[0][0])


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    port = free_port()
    url = f"chdb://{tmp_path / 'clickhouse'}"
    with open_store(url) as store:
        store.apply_schema()
        hosts = web_guard.allowed_hosts("127.0.0.1", port)

        async def route(request: web.Request) -> web.Response:
            answer = await query.answer_request(request, store, url, hosts)
            return web.Response(
                body=answer.body, status=answer.status, content_type="application/json"
            )

        settings = load_settings({})

        async def forecast_route(request: web.Request) -> web.StreamResponse:
            return await forecast_web.forecast_answer(request, settings, store)

        app = web.Application()
        app.router.add_post(query.QUERY_PATH, route)
        app.router.add_get(forecast_web.API_FORECAST_PATH, forecast_route)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield Api(port, store)
        finally:
            await runner.cleanup()


async def test_reads_no_host_file_and_writes_none(api: Api, tmp_path: Path) -> None:
    target = tmp_path / "written"
    for sql in [
        "SELECT file('/etc/hostname')",
        "SELECT file('/proc/self/environ')",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        f"SELECT 'x' INTO OUTFILE '{target}' TRUNCATE",
    ]:
        status, body = await api.post({"sql": sql})
        assert status == 400 and "refused" in body["error"], (sql, body)
    assert not target.exists()


async def test_answers_only_json_from_its_own_host_and_origin(api: Api) -> None:
    own = f"127.0.0.1:{api.port}"
    ok = {"sql": "SELECT 1 AS one"}

    assert await api.post(ok) == (200, {"columns": ["one"], "types": ["UInt8"], "rows": [[1]]})
    assert (await api.post(ok, {"Origin": f"http://{own}"}))[0] == 200
    assert (await api.post(ok, {"Host": f"localhost:{api.port}"}))[0] == 200
    # A cross-site form post (no preflight): text/plain, another Origin.
    assert (await api.post(ok, {"Content-Type": "text/plain"}))[0] == 415
    assert (await api.post(ok, {"Content-Type": "application/x-www-form-urlencoded"}))[0] == 415
    assert (await api.post(ok, {"Origin": "http://evil.example"}))[0] == 403
    assert (await api.post(ok, {"Origin": "null"}))[0] == 403
    # DNS rebinding: the page's own name now points at 127.0.0.1.
    status, body = await api.post(ok, {"Host": f"evil.example:{api.port}"})
    assert status == 403 and "CCI_WEB_ALLOWED_HOSTS" in body["error"]
    assert (await api.post(ok, {"Host": "127.0.0.1:1"}))[0] == 403


async def test_one_statement_per_request_and_nothing_carries_over(api: Api) -> None:
    for sql in [
        "SELECT 'leak' AS x; DROP TABLE cci_tickets",
        "SELECT 'leak' AS x; SELECT 2",
        "KILL QUERY WHERE 1",
        "SYSTEM DROP DNS CACHE",
        "SET readonly = 0",
        "DROP TABLE cci_tickets",
    ]:
        status, body = await api.post({"sql": sql})
        assert status == 400, (sql, body)
        status, body = await api.post({"sql": "SELECT 2 AS y"})
        assert (status, body["rows"]) == (200, [[2]]), sql  # not [["leak"]]
    status, body = await api.post({"sql": "EXISTS TABLE cci_tickets"})
    assert body["rows"] == [[1]]


async def test_heavy_queries_are_bounded(api: Api) -> None:
    status, body = await api.post({"sql": "SELECT number FROM numbers(20000000)"})
    assert status == 400 and "TOO_MANY_ROWS_OR_BYTES" in body["error"]
    status, body = await api.post({"sql": "SELECT 1 SETTINGS max_memory_usage = 0"})
    assert status == 400
    status, body = await api.post({"sql": "SELECT groupArray(number) FROM numbers(200000000)"})
    assert status == 400 and "MEMORY_LIMIT_EXCEEDED" in body["error"]


async def test_a_heavy_query_blocks_nothing_and_stops_when_its_asker_leaves(api: Api) -> None:
    # The asker sends the query and hangs up without reading the answer.
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        body = orjson.dumps({"sql": HEAVY})
        sock.sendall(
            (
                f"POST {query.QUERY_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        deadline = time.monotonic() + 30
        while await api.running("sipHash64") == 0:
            assert time.monotonic() < deadline, "the heavy query never started"
            await asyncio.sleep(0.1)
        started = time.monotonic()
        assert (await api.post({"sql": "SELECT 2"}, timeout=10))[0] == 200  # while it runs
        assert time.monotonic() - started < 10
    left = time.monotonic()
    while await api.running("sipHash64") > 0:
        assert time.monotonic() - left < 10, "the query ran on after its asker left"
        await asyncio.sleep(0.1)
    assert (await api.post({"sql": "SELECT 2"}, timeout=10))[0] == 200  # right after


async def test_at_most_query_slots_run_at_once(api: Api) -> None:
    heavy = [asyncio.ensure_future(api.post({"sql": HEAVY}, timeout=5)) for _ in range(QUERY_SLOTS)]
    deadline = time.monotonic() + 30
    while await api.running("sipHash64") < QUERY_SLOTS:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    status, body = await api.post({"sql": "SELECT 2"})
    assert status == 429 and "running already" in body["error"]
    for task in heavy:  # their askers time out and leave: the queries stop, the slots free up
        with pytest.raises(asyncio.TimeoutError):
            await task
    deadline = time.monotonic() + 15
    while (await api.post({"sql": "SELECT 2"}))[0] != 200:
        assert time.monotonic() < deadline, "the slots never came free"
        await asyncio.sleep(0.2)


async def test_forecasts_and_ad_hoc_queries_have_budgets_of_their_own(api: Api) -> None:
    segment = "dimension=all&segment=all&customers=100&tickets_per_agent=70"
    # Ad hoc queries take every analyst slot: a forecast still reads the store (which has no
    # figure yet: 404 saying so, not 503 "queries are running already").
    heavy = [asyncio.ensure_future(api.post({"sql": HEAVY}, timeout=5)) for _ in range(QUERY_SLOTS)]
    deadline = time.monotonic() + 30
    while await api.running("sipHash64") < QUERY_SLOTS:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await api.post({"sql": "SELECT 2"}))[0] == 429
    status, body = await api.forecast(segment)
    assert status == 404 and "no CCI" in body["error"], body
    for task in heavy:
        with pytest.raises(asyncio.TimeoutError):
            await task

    # Forecasts take every slot of theirs: ad hoc queries still run, a further forecast is busy.
    tags = [f"forecast-{n}" for n in range(FORECAST_QUERY_SLOTS)]
    held = [
        asyncio.ensure_future(asyncio.to_thread(api.store.query, HEAVY, tag=tag, budget="forecast"))
        for tag in tags
    ]
    deadline = time.monotonic() + 30
    while await api.running("sipHash64") < FORECAST_QUERY_SLOTS:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 15
    while (answered := await api.post({"sql": "SELECT 2"}))[0] != 200:
        assert time.monotonic() < deadline, answered  # the ad hoc slots come free as above
        await asyncio.sleep(0.2)
    status, body = await api.forecast(segment)
    assert status == 429 and "forecast" in body["error"], body
    with pytest.raises(StoreBusy):
        api.store.query("SELECT 1", budget="forecast")
    for tag, task in zip(tags, held, strict=True):
        await asyncio.to_thread(api.store.cancel, tag)
        with pytest.raises(Exception, match="cancel"):
            await task


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"sql": "SELECT 1", "sql": "SELECT 2"}', "sql"),
        (b'{"sql": "SELECT {x:UInt8}", "parameters": {"x": 1, "x": 2}}', "x"),
        (b'{"store": "chdb://a", "sql": "SELECT 1", "store": "chdb://b"}', "store"),
    ],
)
async def test_a_body_with_a_key_twice_is_refused_naming_it(
    api: Api, body: bytes, key: str
) -> None:
    status, answer = await api.post(body)
    assert status == 400, answer
    assert f"duplicate key {key!r}" in answer["error"]
