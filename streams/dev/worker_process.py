"""``cci worker`` as a child process: started, health-checked, measured and stopped from outside.

Shared by the integration tests (``tests/integration/harness.py``), ``cci bench``, ``cci soak``
and ``cci demo``, as is ``worker_environment``, the one way they build its environment. The
worker leads its own process group: signals to it reach its children, and a Ctrl-C in the
terminal does not reach it (its owner stops it, in order).
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
from dataclasses import fields
from pathlib import Path

from streams import children
from streams.dev.broker import LOOPBACK, free_port, terminate_group
from streams.settings import Settings

STOP_GRACE_S = 30.0

# The caller's credentials for its own Kafka: never handed to a worker on the loopback broker.
_NOT_PASSED_ON = {
    "CCI_KAFKA_SASL_MECHANISM",
    "CCI_KAFKA_SASL_USERNAME",
    "CCI_KAFKA_SASL_PASSWORD",
    "CCI_KAFKA_SSL_CAFILE",
}


def worker_environment(
    bootstrap: str,
    *,
    data_dir: Path,
    clickhouse_url: str,
    settings: Settings | None = None,
    base: Mapping[str, str] | None = None,
    web_port: int | None = None,
    default_alert_rules: Path | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The environment of a ``cci worker`` on the loopback embedded broker at ``bootstrap``.

    ``base`` (default: this process's environment) without its ``CCI_*`` variables; then every
    setting of ``settings`` that differs from its default, credentials left out; then what this
    decides: the embedded broker in plain text, the web server on loopback, state in ``data_dir``
    and the store at ``clickhouse_url``; ``default_alert_rules`` when ``settings`` names none;
    ``overrides`` last.
    """
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if not key.startswith("CCI_")}
    if default_alert_rules is not None and (settings is None or settings.alert_rules.path is None):
        env["CCI_ALERT_RULES"] = str(default_alert_rules)
    for spec in fields(Settings) if settings is not None else ():
        name = spec.metadata["env"]
        value = getattr(settings, spec.name)
        if name not in _NOT_PASSED_ON and value != spec.default:
            env[name] = setting_text(value)
    env.update(
        CCI_KAFKA_BOOTSTRAP=bootstrap,
        CCI_EMBEDDED_BROKER="true",
        CCI_KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
        CCI_WEB_HOST=LOOPBACK,
        CCI_DATA_DIR=str(data_dir),
        CCI_CLICKHOUSE_URL=clickhouse_url,
    )
    if web_port is not None:
        env["CCI_WEB_PORT"] = str(web_port)
    env.update(overrides)
    return env


def setting_text(value: object) -> str:
    """A setting's value as its ``CCI_*`` variable spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


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

    def health(self, timeout_s: float = 2.0) -> int | None:
        """HTTP status of the worker's ``/health``, None when nothing answers."""
        url = f"http://{LOOPBACK}:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
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
