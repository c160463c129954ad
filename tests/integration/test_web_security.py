"""The worker's web server as a hostile or careless client meets it, and where secrets may leak:
a real broker and worker, real HTTP (docs/security.md)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from streams.dev.broker import free_port
from tests.integration.harness import run_cci, worker_env

STORE_SECRET = "store-Secret-4711"
SASL_SECRET = "sasl-Secret-0815"
TOKEN = "web-Token-0123456789abcdef"


def request(
    port: int,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to the worker; redirects are not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    sent = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}, method=method
    )
    try:
        with opener.open(sent, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_settings_logs_pages_or_errors(pipeline, log_format: str) -> None:
    """A server store URL with a password and a SASL password: neither appears in `cci settings`,
    the startup log line, the sink's errors, /health, /metrics, or the 409 of the query API."""
    store_url = f"http://cci:{STORE_SECRET}@127.0.0.1:{free_port()}/cci"  # nothing listens
    secrets = {
        "CCI_CLICKHOUSE_URL": store_url,
        "CCI_KAFKA_SASL_PASSWORD": SASL_SECRET,
        "CCI_LOG_FORMAT": log_format,
    }
    worker = pipeline.worker(**secrets)
    outputs: dict[str, bytes] = {}
    for path in ("/health", "/metrics"):
        status, _, outputs[path] = request(worker.port, path)
        assert status == 200, (path, outputs[path])
    wanted = {"sql": "SELECT 1", "store": "chdb:///elsewhere"}
    status, _, outputs["409"] = request(
        worker.port,
        "/api/query",
        orjson.dumps(wanted),
        {"Content-Type": "application/json", "Host": f"127.0.0.1:{worker.port}"},
    )
    assert status == 409, outputs["409"]
    assert b"http://cci:***@127.0.0.1" in outputs["409"]

    env = worker_env(pipeline.bootstrap, pipeline.tmp_path / "worker", **secrets)
    shown = run_cci("settings", env=env, cwd=pipeline.tmp_path)
    assert shown.returncode == 0, shown.stderr
    outputs["cci settings"] = shown.stdout.encode() + shown.stderr.encode()
    assert b"http://cci:***@127.0.0.1" in outputs["cci settings"]

    log = worker.log_path.read_bytes()
    assert b"cci worker starting" in log
    assert b"store=http://cci:***@127.0.0.1" in log or b'"store":"http://cci:***@' in log
    assert b"ClickHouse not ready" in log  # the sink's errors about that store were logged
    outputs["worker log"] = log
    for name, text in outputs.items():
        for secret in (STORE_SECRET, SASL_SECRET):
            assert secret.encode() not in text, f"{secret} in {name}"


def test_a_bad_secret_setting_is_named_without_its_value(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CCI_CLICKHOUSE_URL": f"ftp://cci:{STORE_SECRET}@host/db"}
    refused = run_cci("settings", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "CCI_CLICKHOUSE_URL" in refused.stderr
    assert STORE_SECRET not in refused.stdout + refused.stderr
