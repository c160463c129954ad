"""The worker's web server as a hostile or careless client meets it, and where secrets may leak:
a real broker and worker, real HTTP (docs/security.md)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.bench.measure import metric_values
from streams.dev.broker import free_port
from streams.dev.generate import generate
from streams.metrics import SEGMENT_SERIES_LIMIT
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, load_settings
from tests.integration.harness import (
    Figures,
    latest_updates,
    produce,
    run_cci,
    wait_until,
    worker_env,
)
from tests.integration.test_dashboard import more_tickets
from tests.live_changes import apply_changes

STORE_SECRET = "store-Secret-4711"
SASL_SECRET = "sasl-Secret-0815"
TOKEN = "web-Token-0123456789abcdef"
WAIT = 60.0


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


def test_faust_internal_pages_are_not_served(pipeline) -> None:
    """Faust's /router/ and /table/ pages expose the cluster and table contents (and one
    answered 500): the worker serves none of them."""
    worker = pipeline.worker()
    for path in ("/router/", "/router/cci-dedup/", "/table/", "/table/cci-dedup/", "/graph/"):
        status, _, body = request(worker.port, path)
        assert status == 404, (path, status, body[:200])
    status, _, _ = request(worker.port, "/api/cci")
    assert status == 200


def test_web_token_guards_every_page_but_health_and_metrics(pipeline) -> None:
    worker = pipeline.worker(CCI_WEB_TOKEN=TOKEN)
    for path in ("/health", "/metrics"):
        assert request(worker.port, path)[0] == 200, path

    # Programs: 401 without the token or with a wrong one, the page with it.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/cci", "/api/alerts", "/dashboard", "/dashboard/static/dashboard.js"):
        status, headers, _ = request(worker.port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
        assert request(worker.port, path, headers={"Authorization": "Bearer nope"})[0] == 401
        assert request(worker.port, path, headers=bearer)[0] == 200, path
    query = orjson.dumps({"sql": "SELECT 1"})
    json_type = {"Content-Type": "application/json", "Host": f"127.0.0.1:{worker.port}"}
    assert request(worker.port, "/api/query", query, json_type)[0] == 401
    assert request(worker.port, "/api/query", query, {**json_type, **bearer})[0] == 200

    # Browsers: to the login page, which sets an HttpOnly, SameSite=Strict cookie.
    status, headers, _ = request(worker.port, "/dashboard?month=", headers={"Accept": "text/html"})
    assert status == 303 and headers["Location"].startswith("/login?next=/dashboard")
    status, _, page = request(worker.port, "/login?next=/dashboard")
    assert status == 200 and b'name="token"' in page
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = request(worker.port, "/login", b"token=wrong-token-0123456789&next=/dashboard", form)
    assert wrong[0] == 401 and "Set-Cookie" not in wrong[1]
    body = f"token={TOKEN}&next=//evil.example/".encode()
    status, headers, _ = request(worker.port, "/login", body, form)
    assert status == 303 and headers["Location"] == "/dashboard"  # never off this server
    # A tab, CR or LF is dropped when the Location header is built: "/\t/evil" became "//evil".
    for sneaky in ("/%09/evil.example", "/%0a/evil.example", "/%0d/evil.example", "/%5c/evil"):
        body = f"token={TOKEN}&next={sneaky}".encode()
        status, headers, _ = request(worker.port, "/login", body, form)
        assert status == 303 and headers["Location"] == "/dashboard", sneaky
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = {"Cookie": cookie.split(";", 1)[0]}
    assert request(worker.port, "/api/cci", headers=session)[0] == 200
    assert request(worker.port, "/api/cci", headers={"Cookie": "cci_session=forged"})[0] == 401

    # cci query (through the worker: it owns the embedded store) sends the token itself.
    env = worker_env(
        pipeline.bootstrap,
        pipeline.tmp_path / "worker",
        CCI_WEB_TOKEN=TOKEN,
        CCI_WEB_PORT=str(worker.port),
    )
    answered = run_cci("query", "SELECT 41 + 1 AS answer", env=env, cwd=pipeline.tmp_path)
    assert answered.returncode == 0, answered.stderr
    assert "42" in answered.stdout


class LiveStream:
    """One ``GET /api/stream`` read event by event, as EventSource reads it."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        self.connection.request("GET", "/api/stream")
        self.response = self.connection.getresponse()

    def next_event(self) -> tuple[str, Any]:
        name, data = "message", b""
        while True:
            line = self.response.readline()
            assert line, "the stream ended"
            line = line.rstrip(b"\n")
            if not line:
                if data:
                    return name, orjson.loads(data)
                continue
            if line.startswith(b"event: "):
                name = line.removeprefix(b"event: ").decode()
            elif line.startswith(b"data: "):
                data = line.removeprefix(b"data: ")

    def close(self) -> None:
        self.connection.close()


def test_live_streams_are_capped_and_push_only_changes(pipeline) -> None:
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=60, months=2, seed=5, now=now, zone=settings.zone)
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker(CCI_LIVE_STREAMS="2")
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    newest = max(month for month, _, _ in expected)

    def shown() -> Figures:
        figures: Figures = {}
        history = orjson.loads(request(worker.port, "/api/cci/history")[2])
        for dimension, segments in history["dimensions"].items():
            for segment, points in segments.items():
                for point in points:
                    counts = (point["tickets"], point["active_users"])
                    figures[(point["month"], dimension, segment)] = counts
        return {key: counts for key, counts in figures.items() if any(counts)}

    def arrived(figures: Figures) -> None:
        wanted = {key: counts for key, counts in figures.items() if any(counts)}
        wait_until(lambda: shown() == wanted, WAIT, "the figures did not arrive")

    # Every figure first: a stream opened before would see whole dimensions appear.
    arrived(expected)
    first, second = LiveStream(worker.port), LiveStream(worker.port)
    name, whole = first.next_event()
    assert name == "cci" and whole["cci"]["month"] == newest
    assert second.next_event()[0] == "cci"
    # The cap: a third stream is refused, clearly, until one of the two ends.
    status, headers, body = request(worker.port, "/api/stream")
    assert status == 503 and headers["Retry-After"]
    assert "CCI_LIVE_STREAMS" in orjson.loads(body)["error"]
    second.close()
    wait_until(
        lambda: (third := LiveStream(worker.port)).response.status == 200 and not third.close(),
        WAIT,
        "a closed stream still counts against the cap",
    )

    # More tickets: the open stream gets only what changed, which makes the figures current.
    extra = more_tickets(data.activity, newest, 1)
    produce(pipeline.bootstrap, TOPIC_TICKETS, extra)
    arrived(recount(data.activity, data.tickets + extra, data.profiles, now, settings).figures)
    latest = LiveStream(worker.port)
    name, current = latest.next_event()
    latest.close()
    assert name == "cci"
    full_size = len(orjson.dumps(current))
    page = whole
    while page != current:
        name, changes = first.next_event()
        assert name == "cci-changes", name
        assert len(orjson.dumps(changes)) < full_size / 2, changes
        page = apply_changes(page, changes)
    first.close()


def test_segment_metric_series_are_bounded_per_dimension(pipeline) -> None:
    """More distinct regions than SEGMENT_SERIES_LIMIT: /metrics keeps to the limit, counts what
    it left out and says so in the log; every figure still reaches cci-updates."""
    regions = SEGMENT_SERIES_LIMIT + 5
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    activity = [
        orjson.dumps(
            {"user_id": f"u{i}", "occurred_at": stamp, "segments": {"region": f"r-{i:04d}"}}
        )
        for i in range(regions)
    ]
    worker = pipeline.worker()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, activity)

    def region_updates() -> int:
        updates = latest_updates(pipeline.bootstrap).values()
        return sum(1 for u in updates if u["dimension"] == "region" and u["active_users"])

    wait_until(lambda: region_updates() == regions, WAIT, "not every region's figure arrived")
    page = request(worker.port, "/metrics")[2].decode()
    series = [line for line in page.splitlines() if line.startswith("cci_current{")]
    in_region = [line for line in series if 'dimension="region"' in line]
    assert len(in_region) == SEGMENT_SERIES_LIMIT
    assert any('dimension="all"' in line for line in series)  # other dimensions unaffected
    dropped = metric_values(page, ["cci_current_dropped_total"])["cci_current_dropped_total"]
    assert dropped >= regions - SEGMENT_SERIES_LIMIT
    log = worker.log_path.read_text()
    assert f"region has more than {SEGMENT_SERIES_LIMIT} segments" in log
