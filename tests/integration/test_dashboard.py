"""The dashboard in a real browser: headless Chromium on a worker's /dashboard, read over DevTools.

Broker and worker are real (the ``pipeline`` fixture); the figures on the page are compared with
the batch recount of the events produced, before and after more tickets arrive (without a
reload), and alerts are produced to ``cci-alerts`` the way the alerting stage publishes them.
``CCI_UPDATE_SCREENSHOT=1`` also copies the screenshot to docs/dashboard.png for the README.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.bench.measure import describe_difference
from streams.dev.generate import generate
from streams.dev.produce import produce_records
from streams.pipeline.recount import recount
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_ALERTS,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    load_settings,
)
from tests.integration.browser import Browser, chromium_or_skip
from tests.integration.harness import Figures, produce, wait_until

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"
WAIT = 60.0
TOKEN = "dashboard-Token-0123456789"  # CCI_WEB_TOKEN: the browser logs in first

# Every figure row on the page: dimension, segment, tickets, active users, CCI text, alert badges.
READ_ROWS = """
Array.from(document.querySelectorAll("tr[data-segment]")).map(function (row) {
  function field(name) { return row.querySelector("[data-field=" + name + "]").textContent; }
  return [row.dataset.dimension, row.dataset.segment, field("tickets"), field("active_users"),
          field("cci"), Array.from(row.querySelectorAll(".badge")).map(b => b.dataset.alert)];
})
"""


def shown_figures(browser: Browser) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (dimension, segment): (int(tickets.replace(",", "")), int(users.replace(",", "")))
        for dimension, segment, tickets, users, _, _ in browser.evaluate(READ_ROWS)
    }


def of_month(figures: Figures, month: str) -> dict[tuple[str, str], tuple[int, int]]:
    return {(d, s): counts for (m, d, s), counts in figures.items() if m == month and any(counts)}


def wait_for_page(browser: Browser, expected: dict[tuple[str, str], tuple[int, int]]) -> None:
    def matches() -> bool:
        return shown_figures(browser) == expected

    try:
        wait_until(matches, WAIT, "")
    except AssertionError:
        shown = {("page", *k): v for k, v in shown_figures(browser).items()}
        wanted = {("page", *k): v for k, v in expected.items()}
        raise AssertionError("\n".join(describe_difference(wanted, shown))) from None


def badges(browser: Browser) -> dict[tuple[str, str], list[str]]:
    return {(row[0], row[1]): row[5] for row in browser.evaluate(READ_ROWS) if row[5]}


def produce_alert(
    bootstrap: str, figures: Figures, key: tuple[str, str, str], state: str, version: int
) -> str:
    """Publish an alert on a figure, keyed and shaped as the alerting stage publishes it."""
    month, dimension, segment = key
    tickets, users = figures[key]
    ratio = tickets / users
    value = {
        "rule": "cci-high",
        "month": month,
        "dimension": dimension,
        "segment": segment,
        "state": state,
        "condition": "above",
        "threshold": round(0.75 * ratio, 2),
        "cci": ratio,
        "tickets": tickets,
        "active_users": users,
        "min_active_users": 5,
        "version": version,
        "at": datetime.now(UTC).isoformat(),
    }
    alert_key = f"cci-high|{month}|{dimension}|{segment}"
    record = (alert_key.encode(), orjson.dumps(value))
    asyncio.run(produce_records(bootstrap, TOPIC_ALERTS, [record], one_record_batches=True))
    return alert_key


def more_tickets(activity: list[bytes], month: str, count: int) -> list[bytes]:
    """New tickets of (up to ``count``) users active in ``month``, filed at their activity."""
    tickets, users = [], set()
    for raw in activity:
        event = orjson.loads(raw)
        if event.get("occurred_at", "").startswith(month) and event["user_id"] not in users:
            users.add(event["user_id"])
            ticket = {
                "ticket_id": f"tkt-live-{len(tickets)}",
                "user_id": event["user_id"],
                "created_at": event["occurred_at"],
                "channel": "chat",
            }
            tickets.append(orjson.dumps(ticket))
        if len(tickets) == count:
            break
    assert tickets, f"no user active in {month}"
    return tickets


def log_in(browser: Browser, token: str) -> None:
    """Type ``token`` into the login page (once it shows) and submit it."""
    wait_until(
        lambda: (
            browser.evaluate("location.pathname") == "/login"
            and browser.evaluate("document.getElementById('token') !== null")
        ),
        WAIT,
        "the dashboard did not send the browser to the login page",
    )
    browser.evaluate(
        f"document.getElementById('token').value = {orjson.dumps(token).decode()};"
        "document.getElementById('login').click()"
    )


def get_json(port: int, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def test_dashboard_shows_live_figures_and_alerts_in_a_browser(pipeline, tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=240, months=4, seed=21, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    months = sorted({month for month, _, _ in expected})
    newest, older = months[-1], months[-2]

    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker(CCI_WEB_TOKEN=TOKEN)
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)

    with Browser(chromium) as browser:
        # 0. Without the session cookie the dashboard is refused: the login page instead. A
        # wrong token stays there; the right one leads on to the dashboard.
        browser.navigate(f"http://127.0.0.1:{worker.port}/dashboard")
        log_in(browser, "wrong-token-0123456789")
        wait_until(
            lambda: browser.evaluate("document.querySelector('[role=alert]') !== null"),
            WAIT,
            "a wrong token was not refused",
        )
        assert browser.evaluate("location.pathname") == "/login"
        assert browser.evaluate("document.cookie") == ""
        log_in(browser, TOKEN)
        wait_until(
            lambda: browser.evaluate("location.pathname") == "/dashboard",
            WAIT,
            "the login did not lead to the dashboard",
        )
        # HttpOnly: the page's scripts cannot read the session cookie.
        assert browser.evaluate("document.cookie") == ""
        # 1. The newest month's figures appear, equal to the recount of the events.
        wait_for_page(browser, of_month(expected, newest))
        month_shown = "document.getElementById('month').selectedOptions[0].text"
        assert browser.evaluate(month_shown) == f"newest ({newest})"
        browser.evaluate("window.notReloaded = true")
        pushes = browser.evaluate("window.cciDashboard.pushes")

        # 2. More tickets arrive: the page follows the live stream, without a reload.
        extra = more_tickets(data.activity, newest, 12)
        produce(pipeline.bootstrap, TOPIC_TICKETS, extra)
        updated = recount(data.activity, data.tickets + extra, data.profiles, now, settings).figures
        assert of_month(updated, newest) != of_month(expected, newest)
        wait_for_page(browser, of_month(updated, newest))
        assert browser.evaluate("window.notReloaded") is True
        assert browser.evaluate("window.cciDashboard.pushes") > pushes

        # 3. Alerts: a firing one shows as a badge on its segment and in the list; a cleared one
        # (a higher version of the same key) disappears.
        # (Segments picked from the data: early in a month its figures are few.)
        current = of_month(updated, newest)
        plan = max((k for k in current if k[0] == "plan"), key=lambda k: current[k][0])
        tenure = max((k for k in current if k[0] == "tenure"), key=lambda k: current[k][1])
        plan_key, tenure_key = (newest, *plan), (newest, *tenure)
        plan_alert = produce_alert(pipeline.bootstrap, updated, plan_key, "firing", version=1)
        tenure_alert = produce_alert(pipeline.bootstrap, updated, tenure_key, "firing", version=1)
        listed = (
            "Array.from(document.querySelectorAll('#alert-list li')).map(li => li.dataset.alert)"
        )
        wait_until(
            lambda: badges(browser) == {plan: ["cci-high"], tenure: ["cci-high"]},
            WAIT,
            f"no alert badges: {badges(browser)}",
        )
        assert sorted(browser.evaluate(listed)) == sorted([plan_alert, tenure_alert])
        assert browser.evaluate("document.getElementById('alert-count').textContent") == "2 firing"
        produce_alert(pipeline.bootstrap, updated, plan_key, "cleared", version=2)
        wait_until(
            lambda: browser.evaluate(listed) == [tenure_alert],
            WAIT,
            f"the cleared alert is still listed: {browser.evaluate(listed)}",
        )
        assert badges(browser) == {tenure: ["cci-high"]}

        # 4. An older month from the selector, then back to following the newest.
        choose = "var s = document.getElementById('month'); s.value = '{}';" + (
            "s.dispatchEvent(new Event('change'))"
        )
        browser.evaluate(choose.format(older))
        wait_for_page(browser, of_month(updated, older))
        browser.evaluate(choose.format(""))
        wait_for_page(browser, of_month(updated, newest))

        # Trend charts: a point series for each segment with a CCI in some retained month.
        charts = browser.evaluate(
            "Array.from(document.querySelectorAll('svg.chart'), c => [c.dataset.dimension,"
            " Array.from(c.querySelectorAll('circle'), p => p.dataset.segment)])"
        )
        with_ratio: dict[str, set[str]] = {}
        for (_, dimension, segment), (_, users) in updated.items():
            if users:
                with_ratio.setdefault(dimension, set()).add(segment)
        assert {d: set(s) for d, s in charts} == with_ratio
        assert browser.errors == []

        # The picture without the yellow flash that marks changed figures for a moment.
        wait_until(
            lambda: browser.evaluate("document.querySelectorAll('td.flash').length") == 0,
            WAIT,
            "changed figures still flashing",
        )
        shot = browser.screenshot(tmp_path / "dashboard.png")
        assert shot.stat().st_size > 10_000
        if os.environ.get("CCI_UPDATE_SCREENSHOT"):
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)

    # The JSON API behind the page agrees with it, and names a bad parameter.
    status, body = get_json(worker.port, "/api/cci?dimension=plan")
    assert status == 200 and body["month"] == newest
    assert {
        ("plan", r["segment"]): (r["tickets"], r["active_users"])
        for r in body["dimensions"]["plan"]
    } == {k: v for k, v in of_month(updated, newest).items() if k[0] == "plan"}
    status, body = get_json(worker.port, "/api/cci/history?dimension=tenure")
    assert status == 200 and body["months"] == months
    assert {
        (point["month"], "tenure", segment): (point["tickets"], point["active_users"])
        for segment, points in body["dimensions"]["tenure"].items()
        for point in points
    } == {k: v for k, v in updated.items() if k[1] == "tenure" and any(v)}
    status, body = get_json(worker.port, "/api/alerts")
    assert status == 200 and [a["segment"] for a in body["alerts"]] == [tenure[1]]
    status, body = get_json(worker.port, "/api/cci?month=2026-1")
    assert status == 400 and body["parameter"] == "month"


# --- the contact-rate band and the Plan panel ----------------------------------------------------

READ_BANDS = """
Array.from(document.querySelectorAll("tr[data-segment]")).map(function (row) {
  var mark = row.querySelector("[data-field=band] .band");
  return [row.dataset.dimension, row.dataset.segment, mark ? mark.dataset.band : null,
          mark ? mark.textContent : null, mark ? mark.title : null,
          mark ? getComputedStyle(mark).backgroundColor : null];
})
"""
READ_PLAN = """
Array.from(document.querySelectorAll("#plan-table tbody tr"),
           tr => [tr.dataset.row, Array.from(tr.querySelectorAll("td"), td => td.textContent)])
"""
SET_PLAN = """
(function (values) {
  Object.keys(values).forEach(function (id) { document.getElementById(id).value = values[id]; });
  document.getElementById("plan-form").dispatchEvent(new Event("input", { bubbles: true }));
})(%s)
"""


def set_plan(browser: Browser, values: dict[str, str]) -> None:
    """Type into the Plan panel's inputs, as a user would (one input event)."""
    browser.evaluate(SET_PLAN % orjson.dumps(values).decode())


def plan_cells(records: list[dict[str, Any]]) -> list[list[Any]]:
    """The panel's rows as the page formats the API's records (numbers without trailing zeros)."""

    def number(value: float, places: int) -> str:
        text = f"{value:.{places}f}".rstrip("0").rstrip(".")
        return text or "0"

    formats = [
        ("customers", lambda v: f"{v:,}"),
        ("cci", lambda v: number(v, 4)),
        ("expected_tickets", lambda v: number(v, 2)),
        ("tickets_per_agent", lambda v: number(v, 2)),
        ("agents_needed", lambda v: f"{v:.2f}"),
        ("headcount", str),
        ("target_cci", lambda v: number(v, 4)),
        ("headcount_at_target", str),
        ("agents_not_needed", str),
    ]
    return [[key, [show(r[key]) for r in records]] for key, show in formats if key in records[0]]


def test_dashboard_bands_range_and_live_plan_in_a_browser(pipeline) -> None:
    from streams import domain

    chromium = chromium_or_skip()
    now = datetime.now(UTC)
    settings = load_settings({})
    data = generate(users=240, months=4, seed=22, now=now, zone=settings.zone)
    expected = recount(data.activity, data.tickets, data.profiles, now, settings).figures
    months = sorted({month for month, _, _ in expected})
    newest, complete = months[-1], months[-2]  # the plan reads the newest complete month

    produce(pipeline.bootstrap, TOPIC_PROFILES, data.profiles)
    worker = pipeline.worker()
    produce(pipeline.bootstrap, TOPIC_ACTIVITY, data.activity)
    produce(pipeline.bootstrap, TOPIC_TICKETS, data.tickets)
    guidance = domain.DEFAULT_TARGET_RANGE.guidance()

    with Browser(chromium) as browser:
        browser.navigate(f"http://127.0.0.1:{worker.port}/dashboard")
        wait_for_page(browser, of_month(expected, newest))

        # 1. Every rate carries its band: a word and a colour, and the guidance on hover.
        shown = {(d, s): rest for d, s, *rest in browser.evaluate(READ_BANDS)}
        for (dimension, segment), (tickets, users) in of_month(expected, newest).items():
            band, text, title, colour = shown[(dimension, segment)]
            assert band == domain.band(tickets, users, domain.DEFAULT_TARGET_RANGE)
            if band is None:
                assert text is None
                continue
            assert band in text and title == guidance[band], (dimension, segment, text, title)
            assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
        colours = {band: colour for band, _, _, colour in shown.values() if band}
        assert len(set(colours.values())) == len(colours) >= 2, colours

        # 2. The target range is drawn on the trend charts in % of customers only.
        strips = "document.querySelectorAll('svg.chart rect.target-range').length"
        charts = browser.evaluate("document.querySelectorAll('svg.chart').length")
        assert browser.evaluate(strips) == 0
        browser.evaluate("document.getElementById('mode-pct').click()")
        assert browser.evaluate(strips) == charts > 0
        browser.evaluate("document.getElementById('mode-cci').click()")
        assert browser.evaluate(strips) == 0

        # 3. The Plan panel shows what /api/forecast answers for its inputs.
        inputs = {
            "plan-customers": "100",
            "plan-growth": "50/quarter",
            "plan-periods": "4",
            "plan-capacity": "70",
            "plan-segment": "all|all",
            "plan-target": "",
        }
        query = "customers=100&growth=50%2Fquarter&periods=4&tickets_per_agent=70"

        def panel_agrees(query: str) -> bool:
            status, records = get_json(worker.port, f"/api/forecast?{query}")
            return (
                status == 200
                and browser.evaluate("window.cciDashboard.plan.query") == query
                and browser.evaluate(READ_PLAN) == plan_cells(records)
            )

        set_plan(browser, inputs)
        wait_until(lambda: panel_agrees(query), WAIT, f"plan: {browser.evaluate(READ_PLAN)}")
        plan = dict(browser.evaluate(READ_PLAN))
        assert plan["customers"] == ["100", "150", "200", "250"]
        tickets, users = expected[(complete, "all", "all")]
        assert plan["cci"][0] == f"{tickets / users:.4f}".rstrip("0").rstrip(".")
        source = browser.evaluate("document.getElementById('plan-source').textContent")
        assert f"measured for all|all in {complete}" in source

        # A what-if on a segment adds the headcount at the target and the agents not needed.
        segment = max(
            (k for k in of_month(expected, complete) if k[0] == "plan"),
            key=lambda k: expected[(complete, *k)][1],
        )
        set_plan(browser, {"plan-segment": "|".join(segment), "plan-target": "0.05"})
        what_if = f"{query}&dimension=plan&segment={segment[1]}&target_cci=0.05"
        wait_until(lambda: panel_agrees(what_if), WAIT, f"what-if: {browser.evaluate(READ_PLAN)}")
        rows = [row for row, _ in browser.evaluate(READ_PLAN)]
        assert rows[-3:] == ["target_cci", "headcount_at_target", "agents_not_needed"]

        # A bad input says what is wrong instead of a table.
        set_plan(browser, {"plan-growth": "lots"})
        error = "document.getElementById('plan-error')"
        wait_until(
            lambda: browser.evaluate(
                f"!{error}.hidden && {error}.textContent.startsWith('growth')"
            ),
            WAIT,
            f"no error shown: {browser.evaluate(f'{error}.textContent')}",
        )
        assert browser.evaluate(READ_PLAN) == []  # no table of other inputs under the error

        # 4. Live: more tickets in the plan's month change its CCI, and the panel follows.
        set_plan(browser, inputs)
        wait_until(lambda: panel_agrees(query), WAIT, "the plan did not come back")
        before = dict(browser.evaluate(READ_PLAN))["cci"]
        produce(pipeline.bootstrap, TOPIC_TICKETS, more_tickets(data.activity, complete, 15))
        wait_until(
            lambda: dict(browser.evaluate(READ_PLAN))["cci"] != before and panel_agrees(query),
            WAIT,
            f"the plan did not follow the figures: {browser.evaluate(READ_PLAN)}",
        )
        assert browser.errors == []
