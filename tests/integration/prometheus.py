"""A real Prometheus server and ``promtool`` for tests, from Debian's ``prometheus`` package
(``make prometheus`` installs it). Without them the tests are skipped, except in CI, where
.ci/run installs them first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.dev.broker import LOOPBACK, free_port, terminate_group

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
START_TIMEOUT = 60.0


def binary_or_skip(path: str) -> str:
    """``path`` when it is installed; otherwise skip, or fail in CI (it must be there)."""
    if os.access(path, os.X_OK):
        return path
    reason = f"{path} is not installed (`make prometheus` installs Debian's prometheus package)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it before the tests")
    pytest.skip(reason)


class PrometheusServer:
    """Prometheus on a free loopback port with its own storage, scraping ``targets`` as job
    cci-worker every second, with the project's alert rules loaded. Stop it with ``stop()`` (or
    use it as a context manager): it leads its own process group."""

    def __init__(self, binary: str, targets: list[str], log_path: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="cci-prometheus-"))
        self.log_path = log_path
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "cci-worker", "static_configs": [{"targets": targets}]}
            ],
        }
        self.config_path = self.directory / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self._url("/-/ready"), timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()[-3000:]}")

    def _url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of an HTTP API answer (``/api/v1/...``); fails on an error status."""
        url = self._url(path) + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: labels (sorted, without __name__) → value."""
        data = self.api("/api/v1/query", query=expression)
        return {
            tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")): float(
                item["value"][1]
            )
            for item in data["result"]
        }

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process, 10.0)
        # Its storage is the server's own, written to a temp dir: nothing to keep.
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
