"""``cci demo`` end to end: it shows the figures, stops on request, and leaves nothing running.

The demo runs in a child process (as ``run_demo`` called by ``python -c``) so that SIGINT and
SIGTERM are real signals, in a temporary working directory so its ``.cci/`` lands there. Its stdout
is a pipe, so it prints the plain table.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.dev.broker import LOOPBACK, free_port
from streams.dev.demo import DEMO_ALERT_RULES, demo_worker_environment
from streams.dev.demo_table import UpdatesView, table_dimensions
from streams.dev.demo_traffic import live_cohort
from streams.pipeline.alerts import load_rules
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS, load_settings
from tests.integration.harness import TEST_SESSION_TIMEOUT

USERS = 300
RATE = 100
RUN_FOR_S = 45.0  # from the start: broker and worker start-ups included, on a loaded machine too
FIGURES_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0

# The plain table's global row: "all  all  <tickets>  <active users>  <CCI>  <contact rate %>".
ALL_ROW = re.compile(r"^all\s+all\s+[\d,]+\s+[\d,]+\s+\d+\.\d{2}\s+\d+\.\d$", re.MULTILINE)
BROKER_LINE = re.compile(r"^broker: 127\.0\.0\.1:(\d+) \(pid (\d+)\)$", re.MULTILINE)
WORKER_LINE = re.compile(r"^worker: pid (\d+), web http://127\.0\.0\.1:(\d+)/", re.MULTILINE)


SECRETS = ("store-Secret-4711", "sasl-Secret-0815", "web-Token-0123456789abcdef")


def _demo_command(run_for: float | None) -> list[str]:
    command = [sys.executable, "-m", "streams", "demo", "--users", str(USERS), "--rate", str(RATE)]
    return command if run_for is None else [*command, "--run-for", str(run_for)]


def _demo_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CCI_")}
    # A port of its own, so a developer's worker on 6066 or a parallel test does not interfere.
    env["CCI_WEB_PORT"] = str(free_port())
    env["CCI_SESSION_TIMEOUT"] = TEST_SESSION_TIMEOUT  # its worker joins its groups sooner
    # Secrets a user's environment may hold: none may show in the demo's output or logs.
    env["CCI_CLICKHOUSE_URL"] = f"http://cci:{SECRETS[0]}@clickhouse.example:8123/cci"
    env["CCI_KAFKA_SASL_PASSWORD"] = SECRETS[1]
    env["CCI_WEB_TOKEN"] = SECRETS[2]
    return env


class DemoRun:
    """The demo as a child process in its own session (as a terminal's foreground job would be),
    its output collected line by line."""

    def __init__(self, cwd: Path, run_for: float | None) -> None:
        self.process = subprocess.Popen(
            _demo_command(run_for),
            cwd=cwd,
            env=_demo_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern.search(self.output):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern.pattern!r} in the demo's output:\n{self.output}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the demo did not stop in {timeout} s:\n{self.output}") from None
        self._reader.join(5)
        return code

    def kill_everything(self) -> None:
        """After a failed test: nothing the demo started may outlive it."""
        pids = [int(pid) for _, pid in BROKER_LINE.findall(self.output)]
        pids += [int(pid) for pid, _ in WORKER_LINE.findall(self.output)]
        for pid in [self.process.pid, *pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def children(self) -> dict[str, tuple[int, int]]:
        """name → (pid, port) of the broker and the worker, as the demo announced them."""
        broker = BROKER_LINE.search(self.output)
        worker = WORKER_LINE.search(self.output)
        assert broker and worker, f"the demo did not announce its processes:\n{self.output}"
        return {
            "broker": (int(broker.group(2)), int(broker.group(1))),
            "worker": (int(worker.group(1)), int(worker.group(2))),
        }


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for_alerts(port: int, timeout: float) -> list[dict[str, object]]:
    """The firing alerts the demo's worker lists, once there are any."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{port}/api/alerts",
            headers={"Authorization": f"Bearer {SECRETS[2]}"},  # the demo's CCI_WEB_TOKEN
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            firing = orjson.loads(answer.read())["alerts"]
        if firing or time.monotonic() > deadline:
            assert firing, "no alert fired with the demo's example rules"
            return firing
        time.sleep(1)


def _assert_nothing_left(run: DemoRun) -> None:
    for name, (pid, port) in run.children().items():
        assert not _alive(pid), f"the {name} (pid {pid}) still runs:\n{run.output}"
        assert not _accepts(port), f"something still listens on the {name}'s port {port}"


def test_demo_shows_the_figures_and_stops_by_itself(tmp_path: Path) -> None:
    run = DemoRun(tmp_path, run_for=RUN_FOR_S)
    try:
        code = run.wait(RUN_FOR_S + STOP_TIMEOUT_S)
        assert code == 0, run.output
        _assert_nothing_left(run)
    except BaseException:
        run.kill_everything()
        raise
    assert ALL_ROW.search(run.output), run.output
    for dimension in ("plan", "product", "region", "tenure", "channel"):
        assert re.search(rf"^{dimension}\s+\S+\s+[\d,]+", run.output, re.MULTILINE), dimension
    assert "+ live" in run.output and "events/s" in run.output
    assert "query it meanwhile: CCI_CLICKHOUSE_URL=chdb://.cci/demo/clickhouse" in run.output
    assert run.lines[-1] == "stopped: nothing the demo started is left running", run.output
    worker_log = (tmp_path / ".cci" / "demo" / "worker.log").read_text()
    assert worker_log
    for secret in SECRETS:
        assert secret not in run.output and secret not in worker_log, secret


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_everything(tmp_path: Path, stop_signal: signal.Signals) -> None:
    run = DemoRun(tmp_path, run_for=None)
    try:
        run.wait_for(ALL_ROW, FIGURES_TIMEOUT_S)
        # No CCI_ALERT_RULES: the demo's example rules, and alerts fire on the dashboard's API.
        assert f"alerts: the example rules in {DEMO_ALERT_RULES}" in run.output
        _, port = run.children()["worker"]
        firing = _wait_for_alerts(port, FIGURES_TIMEOUT_S)
        assert {a["rule"] for a in firing} <= {r.name for r in load_rules(DEMO_ALERT_RULES).rules}
        # To the whole foreground group, as Ctrl-C in a terminal does.
        os.killpg(run.process.pid, stop_signal)
        code = run.wait(STOP_TIMEOUT_S)
        assert code == 0, run.output
        _assert_nothing_left(run)
    except BaseException:
        run.kill_everything()
        raise
    assert "worker stopped" in run.output and "broker stopped" in run.output


# --- the pure parts ------------------------------------------------------------------------


def _update(
    month: str, dimension: str, segment: str, tickets: int, actives: int, version: int
) -> tuple[bytes, bytes]:
    key = f"{month}|{dimension}|{segment}".encode()
    value = {
        "month": month,
        "dimension": dimension,
        "segment": segment,
        "tickets": tickets,
        "active_users": actives,
        "cci": tickets / actives if actives else None,
        "contact_rate_pct": 100 * tickets / actives if actives else None,
        "version": version,
        "emitted_at": "2026-11-01T00:00:00.000Z",
    }
    return key, orjson.dumps(value)


def test_updates_view_keeps_the_newest_version_and_orders_the_rows() -> None:
    view = UpdatesView()
    for record in (
        _update("2026-11", "tenure", "12m+", 1, 10, 1),
        _update("2026-11", "tenure", "new", 3, 5, 1),
        _update("2026-11", "plan", "free", 4, 8, 2),
        _update("2026-11", "plan", "free", 9, 9, 1),  # older version arriving late: ignored
        _update("2026-11", "plan", "unknown", 1, 1, 1),
        _update("2026-11", "plan", "paid", 0, 0, 1),  # emptied segment: not shown
        _update("2026-11", "all", "all", 5, 15, 1),
        _update("2026-10", "all", "all", 50, 100, 1),  # another month
    ):
        view.apply(*record)
    view.apply(b"garbage", b"not json")
    rows = view.rows("2026-11", table_dimensions(load_settings({})))
    assert [(r.dimension, r.segment) for r in rows] == [
        ("all", "all"),
        ("plan", "free"),
        ("plan", "unknown"),
        ("tenure", "new"),
        ("tenure", "12m+"),
    ]
    assert rows[1].tickets == 4 and rows[1].cci == 0.5


def test_live_cohorts_bring_new_users_with_their_profiles() -> None:
    zone = load_settings({}).zone
    first = live_cohort(0, 200, datetime.now(UTC), zone)
    second = live_cohort(1, 200, datetime.now(UTC), zone)
    profiled = {orjson.loads(value)["user_id"] for _, value in first.profiles}
    users = {record["user_id"] for _, record in first.events}
    assert users and all(user.startswith("user-c00000-") for user in users)
    # Nearly every user has a profile (the generator leaves a few without, on purpose).
    assert len(users - profiled) <= len(users) * 0.1
    assert {topic for topic, _ in first.events} == {TOPIC_ACTIVITY, TOPIC_TICKETS}
    tickets = [r["ticket_id"] for topic, r in first.events if topic == TOPIC_TICKETS]
    others = {r["ticket_id"] for topic, r in second.events if topic == TOPIC_TICKETS}
    assert not set(tickets) & others


def test_demo_worker_environment_points_at_the_demo_and_keeps_pipeline_settings() -> None:
    base = {
        "PATH": "/bin",
        "CCI_KAFKA_BOOTSTRAP": "prod:9092",
        "CCI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CCI_KAFKA_SASL_USERNAME": "svc",
        "CCI_CLICKHOUSE_URL": "https://user:pw@ch:8443/db",
        "CCI_TIMEZONE": "Europe/Berlin",
        "CCI_EXTRA_DIMENSIONS": "company_size",
    }
    settings = load_settings(base)
    env = demo_worker_environment(settings, "127.0.0.1:40000", 6067, base)
    assert env["PATH"] == "/bin"
    assert env["CCI_KAFKA_BOOTSTRAP"] == "127.0.0.1:40000"
    assert env["CCI_EMBEDDED_BROKER"] == "true"
    assert env["CCI_WEB_PORT"] == "6067"
    assert env["CCI_CLICKHOUSE_URL"] == "chdb://.cci/demo/clickhouse"
    assert env["CCI_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "CCI_KAFKA_SASL_USERNAME" not in env
    assert env["CCI_TIMEZONE"] == "Europe/Berlin"
    assert env["CCI_EXTRA_DIMENSIONS"] == "company_size"
    # Every value passed on parses back to the same settings the caller had.
    passed = load_settings(env)
    assert (passed.timezone, passed.extra_dimensions) == ("Europe/Berlin", ("company_size",))


def test_the_demo_alerts_with_its_example_rules_unless_given_others(tmp_path: Path) -> None:
    settings = load_settings({})
    env = demo_worker_environment(settings, "127.0.0.1:40000", 6067, {})
    assert env["CCI_ALERT_RULES"] == str(DEMO_ALERT_RULES)
    rules = load_settings(env).alert_rules.rules
    assert {rule.name for rule in rules} >= {"plan-above-target", "region-out-of-range"}

    own = tmp_path / "rules.toml"
    own.write_text('[[rule]]\nname = "mine"\ndimension = "all"\nsegment = "all"\nabove = 1\n')
    base = {"CCI_ALERT_RULES": str(own)}
    env = demo_worker_environment(load_settings(base), "127.0.0.1:40000", 6067, base)
    assert env["CCI_ALERT_RULES"] == str(own)
