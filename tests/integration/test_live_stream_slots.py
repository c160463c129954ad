"""The dashboard's live stream (``GET /api/stream``) as careless or greedy clients meet it: the
worker's own handler on a real aiohttp server, over real sockets. The source's topic followers are
not started (no broker needed): the streams carry the empty view and keepalives."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from streams import metrics
from streams.dev.broker import free_port
from streams.settings import load_settings
from streams.web.dashboard import web as dashboard_web
from streams.web.dashboard.source import DashboardSource

PER_CLIENT = 2


class Server:
    def __init__(self, port: int, source: DashboardSource) -> None:
        self.port, self.source = port, source

    def open_stream(self) -> tuple[socket.socket, bytes]:
        """A connected client that sent its request; the status line and headers it got."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(
            f"GET {dashboard_web.API_STREAM_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        return sock, head


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    port = free_port()
    settings = load_settings(
        {
            "CCI_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "CCI_LIVE_STREAMS_PER_CLIENT": str(PER_CLIENT),
        }
    )
    source = DashboardSource(settings)

    async def route(request: web.Request) -> web.StreamResponse:
        return await dashboard_web.live_stream(request, source)

    app = web.Application()
    app.router.add_get(dashboard_web.API_STREAM_PATH, route)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Server(port, source)
    finally:
        source.close()
        await runner.cleanup()


def _abort(sock: socket.socket) -> None:
    """Hang up abruptly (RST), as a crashed browser or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_a_stream_whose_client_vanished_frees_its_slot_at_once(server: Server) -> None:
    sock, head = await asyncio.to_thread(server.open_stream)
    assert head.startswith(b"HTTP/1.1 200")
    assert server.source.live_streams == 1
    _abort(sock)
    hung_up = time.monotonic()
    while server.source.live_streams:
        assert time.monotonic() - hung_up < 3, "the slot is held after its client went away"
        await asyncio.sleep(0.05)
    assert not server.source.live_streams_by_client


async def test_one_client_address_gets_at_most_its_share_of_streams(server: Server) -> None:
    refused = metrics.live_streams_refused.labels("client")
    refused_before = refused._value.get()
    held = [await asyncio.to_thread(server.open_stream) for _ in range(PER_CLIENT)]
    assert all(head.startswith(b"HTTP/1.1 200") for _, head in held)

    sock, head = await asyncio.to_thread(server.open_stream)
    sock.close()
    assert head.startswith(b"HTTP/1.1 429"), head
    assert b"Retry-After" in head
    assert refused._value.get() == refused_before + 1

    _abort(held.pop()[0])  # one ends: the client may open another
    deadline = time.monotonic() + 3
    while server.source.live_streams_by_client["127.0.0.1"] >= PER_CLIENT:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    sock, head = await asyncio.to_thread(server.open_stream)
    assert head.startswith(b"HTTP/1.1 200")
    for client, _ in [*held, (sock, head)]:
        client.close()
