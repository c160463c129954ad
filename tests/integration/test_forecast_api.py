"""`GET /api/forecast` on a real worker answers what `cci forecast --format json` prints, byte for
byte: with a given CCI (the first article's table), with the CCI the worker measured in its own
store, with a what-if and with a trend; a bad parameter is named."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson

from streams import domain
from streams.dev.generate import generate
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, load_settings
from streams.web.forecast import FORECAST_SOURCE_HEADER
from tests.integration.harness import produce, run_cci, wait_for_figures, wait_until

ARTICLE = "customers=100,150,200,250&cci=1.5&tickets_per_agent=70"


def get(port: int, query: str) -> tuple[int, bytes, dict[str, str]]:
    url = f"http://127.0.0.1:{port}/api/forecast?{query}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def cli_json(query: str, env: dict[str, str], cwd: Path) -> tuple[str, str]:
    """`cci forecast` with the same parameters as flags: its stdout and stderr."""
    args = []
    for name, value in urllib.parse.parse_qsl(query):
        args += ["--" + name.replace("_", "-"), value]
    done = run_cci("forecast", *args, "--format", "json", env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_the_api_answers_what_the_cli_prints(pipeline, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=300, months=4, seed=5, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    wait_for_figures(pipeline.bootstrap, expected)
    env = dict(worker.env)

    # 1. The first article's Q1–Q4 table, from the API exactly as from the CLI.
    status, body, headers = get(worker.port, ARTICLE)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    printed, _ = cli_json(ARTICLE, env, tmp_path)
    assert body.decode() == printed
    table = orjson.loads(body)
    assert [r["customers"] for r in table] == [100, 150, 200, 250]
    assert [r["expected_tickets"] for r in table] == [150, 225, 300, 375]
    assert [round(r["agents_needed"], 2) for r in table] == [2.14, 3.21, 4.29, 5.36]
    assert [r["headcount"] for r in table] == [3, 4, 5, 6]

    # 2. Without a CCI: the worker's newest complete month, once its sink has written it.
    this_month = domain.month_of(now, settings.zone)
    last = domain.month_label(this_month - 1)
    tickets, users = expected[(last, "all", "all")]
    measured = "customers=1000&growth=5%25/quarter&tickets_per_agent=55"
    wait_until(lambda: get(worker.port, measured)[0] == 200, 60, "no measured CCI in the store")

    def settled(query: str) -> tuple[bytes, str, str, str]:
        # The sink may still be writing the newest versions: compare once both agree.
        answers: list[tuple[bytes, str, str, str]] = []

        def agree() -> bool:
            status, body, headers = get(worker.port, query)
            printed, said = cli_json(query, env, tmp_path)
            answers.append((body, headers[FORECAST_SOURCE_HEADER], printed, said))
            return status == 200 and body.decode() == printed

        wait_until(agree, 60, f"API and CLI differ: {answers[-1] if answers else None}")
        return answers[-1]

    body, source, _, said = settled(measured)
    assert orjson.loads(body)[0]["cci"] == tickets / users
    assert urllib.parse.unquote(source) == said.strip().removeprefix("Headcount plan: ")
    assert f"measured for all|all in {last} ({tickets} tickets / {users} active users)" in said

    # 3. What-if and trend, on a segment.
    plan = next(s for (m, d, s), (_, u) in expected.items() if m == last and d == "plan" and u)
    what_if = (
        f"customers=200,400&tickets_per_agent=40&dimension=plan&segment={plan}"
        "&target_cci=0.05&minutes_per_ticket=20"
    )
    body, _, _, _ = settled(what_if)
    first = orjson.loads(body)[0]
    assert first["target_cci"] == 0.05 and first["headcount_at_target"] == 1
    assert first["agents_not_needed"] == first["headcount"] - 1
    t, u = expected[(last, "plan", plan)]
    assert first["support_hours_saved"] == float(
        (200 * domain.cci_ratio(t, u) - 200 * domain.cci_ratio(1, 20)) * 20 / 60
    )
    trend = "customers=500&growth=0/month&periods=3&tickets_per_agent=70&trend_months=3"
    body, source, _, said = settled(trend)
    assert "least squares over 3 months" in urllib.parse.unquote(source)
    assert f"from {domain.month_label(this_month)}" in said
    assert len({r["cci"] for r in orjson.loads(body)}) > 1  # one CCI per period, not flat

    # 4. Bad parameters are named; a figure the store lacks is said.
    for query, parameter in (
        ("customers=100", "tickets_per_agent"),
        ("customers=many&tickets_per_agent=70", "customers"),
        (ARTICLE + "&month=2026-01", "month"),
        (ARTICLE + "&cci=2", "cci"),
        (ARTICLE + "&colour=red", "colour"),
        ("customers=1&tickets_per_agent=7&trend_months=1", "trend_months"),
        ("customers=1&tickets_per_agent=7&target_cci=x", "target_cci"),
        ("customers=1&tickets_per_agent=7&growth=1." + "3" * 3000 + "%25/month", "growth"),
    ):
        status, body, _ = get(worker.port, query)
        assert status == 400, (query, body)
        assert orjson.loads(body)["parameter"] == parameter, (query, body)
        assert orjson.loads(body)["error"].startswith(parameter), (query, body)
    status, body, _ = get(worker.port, "customers=1&tickets_per_agent=7&dimension=plan&segment=x")
    assert status == 404 and "no CCI for plan|x" in orjson.loads(body)["error"]
    status, body, _ = get(worker.port, "customers=1&tickets_per_agent=7&trend_months=12")
    assert status == 404 and "12-month trend of all|all" in orjson.loads(body)["error"]
