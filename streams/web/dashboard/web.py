"""The dashboard's HTTP side: the page, its static files, the JSON API and the live stream.

Faust's web server is aiohttp, so the handlers answer with aiohttp responses;
``streams/worker/routes.py`` only routes to them. The live stream is server-sent events: the page's
``EventSource`` reconnects by itself after a worker restart.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from streams import metrics
from streams.web.dashboard.source import DashboardSource, Sent
from streams.web.dashboard.view import BadParameter, Query, Record

PAGE_PATH = "/dashboard"
STATIC_PATH = "/dashboard/static/{name}"
API_CCI_PATH = "/api/cci"
API_HISTORY_PATH = "/api/cci/history"
API_ALERTS_PATH = "/api/alerts"
API_STREAM_PATH = "/api/stream"

PUSH_INTERVAL = 0.5  # least seconds between two pushes to one client: bursts coalesce
KEEPALIVE_SECONDS = 15.0  # a comment line this often finds closed connections (and proxies)
RECONNECT_MS = 2000  # EventSource's retry delay after the stream ends
DISCONNECT_POLL = 0.5  # seconds between checks that a live stream's client is still there
BUSY_RETRY_SECONDS = 10  # Retry-After of a live stream refused for the CCI_LIVE_STREAMS cap
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


@cache
def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's own files (package data), by name: nothing is fetched from elsewhere."""
    folder = resources.files("streams.web.dashboard") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return files


def _file_response(name: str) -> web.Response:
    found = static_files().get(name)
    if found is None:
        return json_response({"error": f"no such file: {name}"}, status=404)
    body, content_type = found
    # no-cache: the browser revalidates, so a new release's page is never mixed with old files.
    return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})


def page() -> web.Response:
    return _file_response("index.html")


def static_file(name: str) -> web.Response:
    return _file_response(name)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", charset="utf-8"
    )


def query_of(request: web.Request) -> dict[str, list[str]]:
    return {name: request.query.getall(name) for name in request.query}


def api_answer(
    request: web.Request, answer: Callable[[Query, datetime], Record], now: datetime
) -> web.Response:
    """200 with ``answer``'s body at ``now``, or 400 naming the parameter it could not use."""
    try:
        return json_response(answer(query_of(request), now))
    except BadParameter as exc:
        return json_response(exc.body(), status=400)


async def live_stream(request: web.Request, source: DashboardSource) -> web.StreamResponse:
    """``GET /api/stream[?month=]``: a ``cci`` event with the whole month now, then a
    ``cci-changes`` event with what changed after every change (see view.live_changes); 503
    beyond ``CCI_LIVE_STREAMS`` open streams, 429 beyond ``CCI_LIVE_STREAMS_PER_CLIENT`` from the
    client's address (so one client cannot take them all)."""
    try:
        month = source.view.stream_month(query_of(request), source.clock.now())
    except BadParameter as exc:
        return json_response(exc.body(), status=400)
    client = request.remote or ""
    if source.live_streams >= source.max_live_streams:
        return _refused(
            "worker",
            503,
            f"this worker serves at most {source.max_live_streams} live streams "
            "(CCI_LIVE_STREAMS); try again later",
        )
    if source.live_streams_by_client[client] >= source.max_live_streams_per_client:
        return _refused(
            "client",
            429,
            f"at most {source.max_live_streams_per_client} live streams per client address "
            "(CCI_LIVE_STREAMS_PER_CLIENT); close one first",
        )
    source.live_streams += 1
    source.live_streams_by_client[client] += 1
    try:
        return await _stream(request, source, month)
    finally:
        source.live_streams -= 1
        source.live_streams_by_client[client] -= 1
        if not source.live_streams_by_client[client]:
            del source.live_streams_by_client[client]


def _refused(cap: str, status: int, message: str) -> web.Response:
    metrics.live_streams_refused.labels(cap).inc()
    response = json_response({"error": message}, status=status)
    response.headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
    return response


async def _stream(
    request: web.Request, source: DashboardSource, month: str | None
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
        }
    )
    await response.prepare(request)

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    seen = -1
    sent: Sent | None = None
    quiet_since = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
        while not source.closed.is_set() and not gone():
            if source.generation != seen:
                seen = source.generation
                event, sent = source.live_update(month, sent)
                if event is not None:
                    await response.write(event)
                    quiet_since = time.monotonic()
                    await source.pause(PUSH_INTERVAL)
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                await response.write(b": keepalive\n\n")
                quiet_since = time.monotonic()
            else:
                # Short waits: a client that hung up is seen within DISCONNECT_POLL, not at the
                # next write (its slot was held up to KEEPALIVE_SECONDS).
                await source.wait_for_change(seen, DISCONNECT_POLL)
    return response
