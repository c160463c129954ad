"""`cci forecast` with the CCI measured in a real chDB store, as a user runs it with no worker
(the CLI opens the store itself; through a running worker: test_clickhouse_pipeline.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams import domain
from tests.integration.harness import run_cci, store_with_figures

# Months relative to the run: the current one is incomplete, so by default it is not used.
THIS = domain.month_of(datetime.now(UTC), ZoneInfo("UTC"))
LAST, BEFORE = THIS - 1, THIS - 2

FIGURES = {  # (month, dimension, segment) → (tickets, active users)
    (THIS, "all", "all"): (999, 10),
    (LAST, "all", "all"): (45, 30),  # CCI 1.5: the article's table
    (BEFORE, "all", "all"): (20, 40),
    (LAST, "plan", "free"): (70, 3),  # 70/3: 3 customers need exactly one agent of 70 tickets
    (BEFORE, "plan", "paid"): (1, 4),
    (LAST, "plan", "paid"): (5, 0),  # tickets but no active users: no CCI
}
ARTICLE_TABLE = """\
                             Q1    Q2    Q3    Q4
-------------------------  ----  ----  ----  ----
customers                   100   150   200   250
CCI                         1.5   1.5   1.5   1.5
expected tickets / month    150   225   300   375
tickets per agent / month    70    70    70    70
agents needed              2.14  3.21  4.29  5.36
headcount                     3     4     5     6
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return store_with_figures(tmp_path, FIGURES, datetime(2026, 1, 1, tzinfo=UTC))


def forecast(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    done = run_cci("forecast", "--tickets-per-agent", "70", *args, env=env, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def test_the_latest_complete_month_by_default(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = forecast("--customers", "100,150,200,250", env=env, cwd=tmp_path)

    assert code == 0, err
    title, blank, *table = out.splitlines(keepends=True)
    assert title == (
        f"Headcount plan: CCI 1.5000 measured for all|all in {domain.month_label(LAST)} "
        "(45 tickets / 30 active users)\n"
    )
    assert blank == "\n"
    assert "".join(table) == ARTICLE_TABLE


def test_a_chosen_month_and_segment_as_json(env: dict[str, str], tmp_path: Path) -> None:
    before = forecast(
        "--customers", "100", "--month", domain.month_label(BEFORE), "--format", "json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    free = forecast(
        "--customers", "3,4", "--dimension", "plan", "--segment", "free", "--format", "json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    # The newest month with active users: paid has none last month, so the month before.
    paid = forecast(
        "--customers", "8", "--dimension", "plan", "--segment", "paid", env=env, cwd=tmp_path
    )

    code, out, err = before
    assert code == 0, err
    assert orjson.loads(out) == [
        {
            "period": "Q1",
            "customers": 100,
            "cci": 0.5,
            "expected_tickets": 50.0,
            "tickets_per_agent": 70.0,
            "agents_needed": 50 / 70,
            "headcount": 1,
        }
    ]
    assert err == (  # where the CCI came from, kept off stdout
        f"Headcount plan: CCI 0.5000 measured for all|all in {domain.month_label(BEFORE)} "
        "(20 tickets / 40 active users)\n"
    )
    code, out, err = free
    assert code == 0, err
    records = orjson.loads(out)
    assert [r["cci"] for r in records] == [70 / 3, 70 / 3]
    # 3 × 70/3 = 70 tickets: exactly one agent, even though 70/3 has no exact float.
    assert [(r["expected_tickets"], r["agents_needed"], r["headcount"]) for r in records] == [
        (70.0, 1.0, 1),
        (280 / 3, 4 / 3, 2),
    ]
    code, out, err = paid
    assert code == 0, err
    assert f"CCI 0.2500 measured for plan|paid in {domain.month_label(BEFORE)}" in out
    assert "(1 tickets / 4 active users)" in out


def test_the_current_month_only_when_asked(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = forecast(
        "--customers", "10", "--month", domain.month_label(THIS), env=env, cwd=tmp_path
    )

    assert code == 0, err
    assert "CCI 99.9000 measured for all|all" in out
    assert out.splitlines()[-1].split() == ["headcount", "15"]  # 999 / 70 = 14.27


def test_no_figure_exits_1_saying_what_is_missing(env: dict[str, str], tmp_path: Path) -> None:
    unknown = forecast(
        "--customers", "100", "--dimension", "plan", "--segment", "gold", env=env, cwd=tmp_path
    )
    no_users = forecast(
        "--customers", "100", "--dimension", "plan", "--segment", "paid",
        "--month", domain.month_label(LAST), env=env, cwd=tmp_path,
    )  # fmt: skip
    no_store = forecast(
        "--customers", "100",
        env={**env, "CCI_CLICKHOUSE_URL": f"chdb://{tmp_path / 'missing'}"}, cwd=tmp_path,
    )  # fmt: skip
    bad_month = forecast("--customers", "100", "--month", "last", env=env, cwd=tmp_path)

    code, out, err = unknown
    assert (code, out) == (1, "")
    assert "no CCI for plan|gold in any month before this one" in err
    assert "--cci" in err
    code, out, err = no_users
    assert (code, out) == (1, "")
    assert f"no CCI for plan|paid in {domain.month_label(LAST)}" in err
    code, out, err = no_store
    assert (code, out) == (1, "")
    assert "no embedded store" in err
    assert not (tmp_path / "missing").exists()
    code, out, err = bad_month
    assert code == 2 and "--month" in err and "YYYY-MM" in err


def test_a_trend_and_a_what_if_from_the_store(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = forecast(
        "--customers", "100", "--growth", "0/quarter", "--periods", "2", "--trend-months", "2",
        "--target-cci", "0.5", "--minutes-per-ticket", "6", env=env, cwd=tmp_path,
    )  # fmt: skip

    assert code == 0, err
    title = out.splitlines()[0]
    # 0.5 two months ago, 1.5 last month: +1 a month, so 2.5 this month and 5.5 three months on.
    assert title == (
        f"Headcount plan: CCI trend of all|all: least squares over 2 months "
        f"{domain.month_label(BEFORE)}..{domain.month_label(LAST)}, 1.5000 in "
        f"{domain.month_label(LAST)} +1.0000 a month; projected to the first month of each period "
        f"from {domain.month_label(THIS)}"
    )
    rows = {line[:27].strip(): line[27:].split() for line in out.splitlines()[4:]}
    assert rows["CCI"] == ["2.5", "5.5"]
    assert rows["expected tickets / month"] == ["250", "550"]
    assert rows["headcount"] == ["4", "8"]
    assert rows["target CCI"] == ["0.5", "0.5"]
    assert rows["headcount at target CCI"] == ["1", "1"]
    assert rows["agents not needed"] == ["3", "7"]
    assert rows["support hours saved / month"] == ["20", "50"]  # 200 and 500 tickets × 6 min


def test_a_trend_needs_enough_months(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = forecast("--customers", "100", "--trend-months", "3", env=env, cwd=tmp_path)

    assert (code, out) == (1, "")
    assert "a 3-month trend of all|all needs 3 months with active users" in err
    assert "the store has 2" in err and "--trend-months" in err and "--cci" in err
    code, _, err = forecast("--customers", "100", "--trend-months", "1", env=env, cwd=tmp_path)
    assert code == 2 and "--trend-months" in err and "from 2" in err
