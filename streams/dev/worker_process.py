"""``cci worker`` as a child process: started, health-checked, measured and stopped from outside.

Shared by the integration tests (``tests/integration/harness.py``), ``cci bench`` and
``cci demo``. The worker leads its own process group: signals to it reach its children, and a
Ctrl-C in the terminal does not reach it (its owner stops it, in order).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from streams import children
from streams.dev.broker import LOOPBACK, free_port, terminate_group

STOP_GRACE_S = 30.0


class WorkerStartError(RuntimeError):
    """The worker exited, or did not become healthy in time; the message ends with its log."""


class WorkerProcess:
    """``cci worker`` as a child process in its own process group, logging to a file.

    ``env`` is the worker's whole environment; ``CCI_WEB_PORT`` is set to ``port`` (default: a
    free loopback port).
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        # As in the Docker image (deploy/Dockerfile says why), unless ``env`` says otherwise.
        self.env = {"MALLOC_ARENA_MAX": "2", **env, "CCI_WEB_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.statuses_seen: list[int | None] = []  # /health answers while waiting, in order

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = children.popen(
            [sys.executable, "-m", "streams", "worker"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def exited(self) -> int | None:
        """The exit code once the process has ended, None while it runs (or before start)."""
        return None if self.process is None else self.process.poll()

    def health(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/health", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise WorkerStartError(f"worker exited with {code}:\n{self.log_tail()}")
            status = self.health()
            if not self.statuses_seen or self.statuses_seen[-1] != status:
                self.statuses_seen.append(status)
            if status == 200:
                return
            time.sleep(0.3)
        raise WorkerStartError(f"worker not healthy after {timeout}s:\n{self.log_tail()}")

    def get(self, path: str) -> str:
        url = f"http://{LOOPBACK}:{self.port}{path}"
        token = self.env.get("CCI_WEB_TOKEN", "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=5
        ) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        self._signal(signal.SIGKILL)
        if self.process:
            self.process.wait(10)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the group, SIGKILL after ``grace_s``; the exit code (None if never run)."""
        if self.process is None:
            return None
        return terminate_group(self.process, grace_s)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def diagnostics(self) -> str:
        """Health, the pipeline's counters and the log tail: what a failed wait needs to say."""
        try:
            counters = [
                line
                for line in self.get("/metrics").splitlines()
                if line.startswith("cci_") and "_created" not in line
            ]
        except OSError as exc:
            counters = [f"(no metrics: {exc})"]
        return "\n".join(
            [f"--- {self.log_path.name}: health {self.health()}", *counters, self.log_tail(40)]
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
