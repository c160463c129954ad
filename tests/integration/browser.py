"""A real headless Chromium driven over the DevTools protocol, for tests of the dashboard page.

Debian's ``chromium`` package (``make browser`` installs it) runs in its own process group and is
always killed with it; the protocol is spoken over aiohttp's websocket client, so no browser
automation package or browser download is needed. The calls are synchronous (each runs the
page's own event loop until it is answered) so tests can mix them with the harness's helpers.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from streams.dev.broker import free_port, terminate_group

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0


def chromium_or_skip() -> str:
    """The Chromium binary; a test is skipped without one, except in CI, where it must be there."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium package)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it before the tests")
    pytest.skip(reason)


class BrowserError(AssertionError):
    """The page threw, or the browser answered a call with an error."""


class Browser:
    """Chromium with one page; use as a context manager so it is always killed."""

    def __init__(self, binary: str, width: int = 1360, height: int = 900) -> None:
        self.binary = binary
        self.width, self.height = width, height
        self.port = free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="cci-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)
        self.errors: list[str] = []  # uncaught exceptions in the page, as the console shows them

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--no-default-browser-check",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderers and helpers die with it
        )
        target = self._page_target()
        self.loop.run_until_complete(self._connect(target["webSocketDebuggerUrl"]))
        self.call("Runtime.enable")  # reports the page's uncaught exceptions (see errors)

    def _page_target(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}")
            try:
                url = f"http://127.0.0.1:{self.port}/json/list"
                with urllib.request.urlopen(url, timeout=2) as response:
                    targets = orjson.loads(response.read())
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return dict(pages[0])
            except OSError:
                pass
            time.sleep(0.2)
        raise BrowserError(f"chromium's DevTools did not answer within {START_TIMEOUT}s")

    async def _connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.socket = await self.session.ws_connect(url, max_msg_size=0)

    def close(self) -> None:
        """Kill the browser's whole process group, whatever state the connection is in."""
        try:
            if self.socket is not None or self.session is not None:
                self.loop.run_until_complete(self._disconnect())
        finally:
            if self.process is not None:
                terminate_group(self.process, grace_s=5)
            self.loop.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    async def _disconnect(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.session is not None:
            await self.session.close()

    # --- the protocol

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result. Other events arriving meanwhile are dropped, but for
        uncaught exceptions, which are kept in ``errors``."""
        return self.loop.run_until_complete(
            asyncio.wait_for(self._call(method, params), CALL_TIMEOUT)
        )

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.socket is not None
        call_id = next(self.ids)
        # A text frame: Chromium closes the connection on a binary one.
        command = {"id": call_id, "method": method, "params": params}
        await self.socket.send_str(orjson.dumps(command).decode())
        while True:
            message = await self.socket.receive()
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise BrowserError(f"DevTools connection ended: {message.type}")
            answer = orjson.loads(message.data)
            if answer.get("method") == "Runtime.exceptionThrown":
                details = answer["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or str(details))
            if answer.get("id") == call_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))

    def navigate(self, url: str) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window) at ``path``."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1}
        shot = self.call(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
