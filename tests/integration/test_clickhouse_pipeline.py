"""After a real run, the store agrees with cci-updates exactly, its raw facts reproduce the figures
with a plain GROUP BY, and `cci query` / `cci report` answer both while the worker runs (through
its web server: the worker owns the embedded engine) and after it stopped (store opened directly).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.dev.generate import generate
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, load_settings
from tests.integration.harness import (
    Figures,
    latest_updates,
    produce,
    run_cci,
    wait_for_figures,
)

CURRENT_SQL = (
    "SELECT formatDateTime(month, '%Y-%m') AS month, dimension, segment, tickets, active_users, "
    "cci, contact_rate_pct, version FROM cci_segment_monthly FINAL"
)
RECOUNT_SQL = (
    "SELECT formatDateTime(month, '%Y-%m') AS month, dimension, segment, tickets, active_users "
    "FROM cci_segment_recount"
)
# The plain GROUP BYs an analyst would write, one per table.
USERS_BY_PLAN_SQL = (
    "SELECT formatDateTime(month, '%Y-%m') AS month, plan, count() AS active_users "
    "FROM cci_monthly_active_users FINAL GROUP BY month, plan"
)
TICKETS_BY_CHANNEL_SQL = (
    "SELECT formatDateTime(month, '%Y-%m') AS month, channel, count() AS tickets "
    "FROM cci_tickets FINAL GROUP BY month, channel"
)


ANALYST_QUERIES = Path(__file__).resolve().parents[2] / "docs" / "clickhouse.md"


def documented_queries() -> list[list[str]]:
    """The arguments of every `cci query` example in docs/clickhouse.md, "Analyst queries"."""
    section = ANALYST_QUERIES.read_text().split("## Analyst queries")[1].split("\n## ")[0]
    commands = re.findall(r'(?m)^    \.venv/bin/cci query (?:"[^"]*"|[^\n]*)', section)
    examples = [shlex.split(command)[2:] for command in commands]
    return [args for args in examples if not args[0].startswith("[")]  # not the synopsis


def cci(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cci(*args, env=env, cwd=cwd)


def query_rows(sql: str, env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    result = cci("query", "--format", "jsonl", sql, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def post_query(port: int, sql: str, **headers: str) -> tuple[int, dict[str, Any]]:
    return http_json(
        port,
        "/api/query",
        orjson.dumps({"sql": sql}),
        {
            "Content-Type": "application/json",
            **{k.replace("_", "-"): v for k, v in headers.items()},
        },
    )


def http_json(
    port: int, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers=headers or {},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def current_of_updates(updates: dict[str, dict[str, Any]]) -> dict[tuple, tuple]:
    return {
        (u["month"], u["dimension"], u["segment"]): (
            u["tickets"],
            u["active_users"],
            u["cci"],
            u["contact_rate_pct"],
            u["version"],
        )
        for u in updates.values()
    }


def current_of_rows(rows: list[dict[str, Any]]) -> dict[tuple, tuple]:
    return {
        (r["month"], r["dimension"], r["segment"]): (
            r["tickets"],
            r["active_users"],
            r["cci"],
            r["contact_rate_pct"],
            r["version"],
        )
        for r in rows
    }


def check_store(
    expected: Figures, want: dict[tuple, tuple], env: dict[str, str], cwd: Path
) -> None:
    """The store's current figures, raw-fact recounts and report, as the CLI prints them."""
    assert current_of_rows(query_rows(CURRENT_SQL, env, cwd)) == want
    recounted = {
        (r["month"], r["dimension"], r["segment"]): (r["tickets"], r["active_users"])
        for r in query_rows(RECOUNT_SQL, env, cwd)
    }
    assert recounted == expected
    users_by_plan = {
        (r["month"], "plan", r["plan"]): r["active_users"]
        for r in query_rows(USERS_BY_PLAN_SQL, env, cwd)
    }
    assert users_by_plan == {
        k: users for k, (_, users) in expected.items() if k[1] == "plan" and users
    }
    tickets_by_channel = {
        (r["month"], "channel", r["channel"]): r["tickets"]
        for r in query_rows(TICKETS_BY_CHANNEL_SQL, env, cwd)
    }
    assert tickets_by_channel == {
        k: tickets for k, (tickets, _) in expected.items() if k[1] == "channel" and tickets
    }
    # Every ticket row names the user who filed it.
    no_user = query_rows("SELECT count() AS n FROM cci_tickets FINAL WHERE user_id = ''", env, cwd)
    assert no_user == [{"n": 0}]

    month = max(k[0] for k in expected)
    report = cci("report", "--month", month, "--dimension", "plan", env=env, cwd=cwd)
    assert report.returncode == 0, report.stderr
    assert f"Customer Contact Index, {month}" in report.stdout
    for (label, dimension, segment), (tickets, users) in expected.items():
        if label == month and dimension == "plan":
            line = next(x for x in report.stdout.splitlines() if x.split()[:2] == ["plan", segment])
            assert line.split()[2:4] == [str(tickets), str(users)], line
    latest_report = cci("report", env=env, cwd=cwd)
    assert latest_report.returncode == 0 and month in latest_report.stdout.splitlines()[0]
    # `cci forecast` reads the same figure: as many customers as active users file exactly the
    # month's tickets (tickets × users / users, in exact arithmetic).
    tickets, users = expected[(month, "all", "all")]
    plan = cci(
        "forecast", "--customers", str(users), "--month", month, "--tickets-per-agent", "1",
        "--format", "json", env=env, cwd=cwd,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    (period,) = orjson.loads(plan.stdout)
    assert (period["cci"], period["expected_tickets"], period["headcount"]) == (
        tickets / users,
        tickets,
        tickets,
    )

    bad = cci("query", "SELECT nope FROM cci_no_such_table", env=env, cwd=cwd)
    assert bad.returncode == 1
    assert "UNKNOWN_TABLE" in bad.stderr and "cci_no_such_table" in bad.stderr
    write = cci("query", "DROP TABLE cci_tickets", env=env, cwd=cwd)
    assert write.returncode == 1 and "only SELECT" in write.stderr


def test_store_agrees_with_cci_updates_with_and_without_a_worker(pipeline, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=300, months=2, seed=13, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected)
    want = current_of_updates(latest_updates(pipeline.bootstrap))
    env = dict(worker.env)

    # Worker running: queries go through its web server. The sink writes within
    # CCI_SINK_FLUSH_SECONDS of reading; give it a little longer than that.
    deadline = time.monotonic() + 30
    while (found := current_of_rows(query_rows(CURRENT_SQL, env, tmp_path))) != want:
        # Compared with the newest figures each time: a rebalance republishes them all.
        want = current_of_updates(latest_updates(pipeline.bootstrap))
        differ = sorted(k for k in want.keys() | found.keys() if want.get(k) != found.get(k))
        assert time.monotonic() < deadline, (
            f"cci_segment_monthly FINAL never matched cci-updates: {len(differ)} of {len(want)} "
            f"segments differ, e.g. {[(k, want.get(k), found.get(k)) for k in differ[:3]]}; "
            f"sink: {[x for x in worker.get('/metrics').splitlines() if x.startswith('cci_sink')]}"
        )
        time.sleep(1)
    check_store(expected, want, env, tmp_path)
    # The CLI went through the worker (it could not have opened the engine the worker holds);
    # the API itself answers as documented.
    status, body = post_query(worker.port, "SELECT count() AS n FROM cci_segment_monthly FINAL")
    assert (status, body["columns"], body["rows"]) == (200, ["n"], [[len(want)]])
    status, body = post_query(worker.port, "SELECT * FROM cci_no_such_table")
    assert status == 400 and "UNKNOWN_TABLE" in body["error"]
    # The running worker's routes refuse other sites, rebound names and host files.
    sql = "SELECT count() FROM cci_tickets"
    assert post_query(worker.port, sql, Content_Type="text/plain")[0] == 415
    assert post_query(worker.port, sql, Origin="http://evil.example")[0] == 403
    assert post_query(worker.port, sql, Host=f"evil.example:{worker.port}")[0] == 403
    status, body = post_query(worker.port, "SELECT file('/etc/hostname')")
    assert status == 400 and "refused" in body["error"]
    assert http_json(worker.port, "/api/cci")[0] == 200
    assert http_json(worker.port, "/api/cci", headers={"Host": "evil.example"})[0] == 403
    assert (
        http_json(worker.port, "/api/alerts", headers={"Origin": "http://evil.example"})[0] == 403
    )
    assert 'cci_sink_rows_written_total{table="cci_tickets"}' in worker.get("/metrics")
    # The documented examples run as printed; the last one, the audit, finds no difference.
    examples = documented_queries()
    assert len(examples) >= 5
    for args in examples:
        printed = cci("query", "--format", "jsonl", *args, env=env, cwd=tmp_path)
        assert printed.returncode == 0, (args, printed.stderr)
        assert printed.stdout.strip() or args is examples[-1], args
    assert printed.stdout.strip() == ""

    # Worker stopped: the CLI opens the store itself and finds the same.
    worker.stop()
    assert worker.health() is None
    check_store(expected, want, env, tmp_path)
