"""The ``cci`` command: help for every command, and bad input that exits non-zero naming it.

Nothing here needs a broker: every failing case must stop before one would be contacted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from streams.cli import cli
from streams.pipeline.recount import expected_updates, recount
from streams.settings import Settings, load_settings

EVERY_VARIABLE = [spec.metadata["env"] for spec in fields(Settings)]
# A port nothing listens on: should a failing case get as far as Kafka, it fails loudly, not hangs.
UNREACHABLE_BOOTSTRAP = "127.0.0.1:1"


@pytest.fixture(autouse=True)
def no_cci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's own CCI_* variables must not leak into these tests."""
    for name in EVERY_VARIABLE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CCI_KAFKA_BOOTSTRAP", UNREACHABLE_BOOTSTRAP)


def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="cci", env=env)


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "summary"),
    [
        ((), "exact, live Customer Contact Index"),
        (("settings",), "List every CCI_* environment variable"),
        (("dev",), "Development helpers"),
        (("dev", "broker"), "Run the embedded Kafka-compatible broker"),
        (("topics",), "Topic administration"),
        (("topics", "create"), "Create the input, output and internal topics"),
        (("worker",), "Run the Faust worker"),
        (("generate",), "Write realistic synthetic events"),
        (("produce",), "Load JSON-lines events from FILE into TOPIC"),
        (("demo",), "Everything on loopback"),
        (("forecast",), "How many agents"),
        (("bench",), "Measure the pipeline against a raw consumer"),
        (("soak",), "Memory of one worker month by month"),
    ],
    ids=lambda part: " ".join(part) if isinstance(part, tuple) else None,
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command: tuple[str, ...], summary: str, flag: str) -> None:
    result = run(*command, flag)

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(('cci', *command))} ")
    assert summary in " ".join(result.output.split())  # help text is re-wrapped


def test_help_lists_the_commands() -> None:
    output = run("--help").output

    commands = ("settings", "dev", "topics", "worker", "generate", "produce", "demo", "forecast")
    for command in commands:
        assert f"  {command} " in output


def test_version() -> None:
    result = run("--version")

    assert result.exit_code == 0
    assert "0.1.0" in result.output


def test_settings_lists_every_variable() -> None:
    result = run("settings")

    assert result.exit_code == 0, result.output
    header, *rows = [line for line in result.output.splitlines() if line.strip()]
    assert header.split()[:3] == ["variable", "value", "default"]
    assert [row.split()[0] for row in rows] == EVERY_VARIABLE


def test_settings_shows_the_current_value_and_hides_passwords() -> None:
    result = run(
        "settings", env={"CCI_TIMEZONE": "Europe/Berlin", "CCI_KAFKA_SASL_PASSWORD": "s3cret"}
    )

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:]}
    assert rows["CCI_TIMEZONE"][:2] == ["Europe/Berlin", "UTC"]
    assert "s3cret" not in result.output and rows["CCI_KAFKA_SASL_PASSWORD"][0] == "***"


# --- bad flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("generate", "--users", "0"), "--users"),
        (("generate", "--users", "many"), "--users"),
        (("generate", "--months", "0"), "--months"),
        (("generate", "--bogus"), "--bogus"),
        (("dev", "broker", "--port", "70000"), "--port"),
        (("dev", "broker", "--port", "0"), "--port"),
        (("topics", "create", "--partitions", "0"), "--partitions"),
        (("worker", "--web-port", "70000"), "--web-port"),
        (("demo", "--users", "5"), "--users"),
        (("demo", "--rate", "0"), "--rate"),
        (("bench", "--events", "10"), "--events"),
        (("bench", "--users", "0"), "--users"),
        (("bench", "--months", "0"), "--months"),
        (("bench", "--months", "14"), "--months"),
        (("bench", "--partitions", "0"), "--partitions"),
        (("bench", "--offered-rate", "0"), "--offered-rate"),
        (("bench", "--offered-rate", "fast"), "--offered-rate"),
        (("bench", "--latency-seconds", "0"), "--latency-seconds"),
        (("bench", "--extra-dimensions", "company size"), "--extra-dimensions"),
        (("bench", "--peer", "flink"), "--peer"),
        (("bench", "--peer", "Quix"), "--peer"),
        (("soak", "--months", "1"), "--months"),
        (("soak", "--months", "3", "--retain-months", "3"), "--months"),
        (("soak", "--retain-months", "0"), "--retain-months"),
        (("soak", "--users", "0"), "--users"),
        (("soak", "--tickets-per-user", "-1"), "--tickets-per-user"),
        (("soak", "--partitions", "0"), "--partitions"),
        (("no-such-command",), "no-such-command"),
    ],
    ids=lambda part: " ".join(part) if isinstance(part, tuple) else None,
)
def test_a_bad_flag_exits_non_zero_naming_it(args: tuple[str, ...], named: str) -> None:
    result = run(*args)

    assert result.exit_code == 2, result.output
    assert named in result.output


def test_more_months_than_are_kept_is_refused_naming_both(tmp_path: Path) -> None:
    result = run("generate", "--months", "14", "--out", str(tmp_path / "out"))

    assert result.exit_code == 2, result.output
    assert "--months" in result.output
    assert "CCI_RETAIN_MONTHS=13" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [("topics", "create"), ("worker",), ("generate", "--users", "10"), ("settings",)],
    ids=" ".join,
)
def test_a_bad_environment_value_exits_non_zero_naming_the_variable(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    result = run(*args, env={"CCI_PARTITIONS": "x", "CCI_DATA_DIR": str(tmp_path)})

    assert result.exit_code == 2, result.output
    assert "CCI_PARTITIONS" in result.output
    assert "'x'" in result.output


@pytest.mark.parametrize("command", ["worker", "settings"])
def test_a_bad_rules_file_exits_non_zero_naming_the_file_and_the_rule(
    command: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "busy"\ndimension = "plan"\nsegment = "x"\nabove = 1\n'
        '[[rule]]\nname = "busy"\ndimension = "plan"\nsegment = "y"\nabove = 1\n'
    )

    result = run(command, env={"CCI_ALERT_RULES": str(rules), "CCI_DATA_DIR": str(tmp_path)})

    assert result.exit_code == 2, result.output
    assert "CCI_ALERT_RULES" in result.output
    assert str(rules) in result.output
    assert "rule 2 ('busy'): field 'name'" in result.output


def test_settings_shows_the_rules_file() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "alert-rules.example.toml"

    result = run("settings", env={"CCI_ALERT_RULES": str(example)})

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:]}
    assert rows["CCI_ALERT_RULES"][0] == str(example)


def test_produce_without_a_topic_names_the_flag(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u1"}\n')

    result = run("produce", str(events))

    assert result.exit_code == 2, result.output
    assert "--topic" in result.output


def produce_where_no_broker_listens(events: Path, embedded: str = "true") -> Result:
    """``cci produce events --topic t`` to port 9 of loopback, where nothing listens."""
    env = {"CCI_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CCI_EMBEDDED_BROKER": embedded}
    return run("produce", str(events), "--topic", "t", env=env)


def test_producing_a_file_with_a_line_too_large_for_a_record_names_it(tmp_path: Path) -> None:
    """Refused whole before any broker is asked (none listens here): no half-loaded topic, no
    traceback."""
    events = tmp_path / "events.jsonl"
    big = '{"user_id": "u2", "activity": "%s"}' % ("x" * 1_100_000)
    events.write_text(f'{{"user_id": "u1"}}\n{big}\n{big}\n')

    result = produce_where_no_broker_listens(events)

    assert result.exit_code == 1, result.output
    assert "line 2 makes a record of 1,100,547 bytes, over the 1,048,576" in result.output
    assert "(1 more such lines); nothing was produced" in result.output
    assert "Traceback" not in result.output


def test_a_line_under_the_limit_whose_record_is_over_it_is_refused_too(tmp_path: Path) -> None:
    """The key and the batch's headers count: such a line failed half-way through a load (and
    left the embedded broker's reported end wrong)."""
    events = tmp_path / "events.jsonl"
    line = '{"user_id": "u1", "activity": "%s"}'
    events.write_text(line % ("x" * (1_048_576 - len(line % "") - 10)) + "\n")

    result = produce_where_no_broker_listens(events)

    assert result.exit_code == 1, result.output
    assert "line 1 makes a record of 1,049,080 bytes" in result.output


@pytest.mark.parametrize("embedded", ["true", "false"])
def test_producing_to_a_broker_that_does_not_answer_says_so_in_a_line(
    tmp_path: Path, embedded: str
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u1"}\n')

    result = produce_where_no_broker_listens(events, embedded)

    assert result.exit_code == 1, result.output
    assert "Error: loading t failed: KafkaConnectionError" in result.output
    assert "Traceback" not in result.output


def test_producing_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"

    result = run("produce", str(missing), "--topic", "t")

    assert result.exit_code == 2, result.output
    assert "missing.jsonl" in result.output
    assert "does not exist" in result.output


# --- forecast ------------------------------------------------------------------------------------

ARTICLE = (
    "forecast",
    "--customers",
    "100,150,200,250",
    "--cci",
    "1.5",
    "--tickets-per-agent",
    "70",
)


def test_forecast_prints_the_articles_table() -> None:
    result = run(*ARTICLE)

    assert result.exit_code == 0, result.output
    assert result.output == (
        "Headcount plan: CCI 1.5 (--cci)\n"
        "\n"
        "                             Q1    Q2    Q3    Q4\n"
        "-------------------------  ----  ----  ----  ----\n"
        "customers                   100   150   200   250\n"
        "CCI                         1.5   1.5   1.5   1.5\n"
        "expected tickets / month    150   225   300   375\n"
        "tickets per agent / month    70    70    70    70\n"
        "agents needed              2.14  3.21  4.29  5.36\n"
        "headcount                     3     4     5     6\n"
    )


def test_the_forecast_docs_show_the_articles_table_as_printed() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "forecast.md").read_text()
    section = docs.split("## The article's table")[1].split("\n## ")[0]
    command = "    $ cci " + " ".join(ARTICLE) + "\n"
    printed = section.split(command)[1].split("\n\nand the same")[0]

    assert printed + "\n" == "".join(
        f"    {line}" if line.strip() else line for line in run(*ARTICLE).output.splitlines(True)
    )


def test_forecast_as_json() -> None:
    result = run(*ARTICLE, "--format", "json")

    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [set(r) for r in records] == [
        {"period", "customers", "cci", "expected_tickets", "tickets_per_agent", "agents_needed",
         "headcount"}
    ] * 4  # fmt: skip
    assert records[0] == {
        "period": "Q1",
        "customers": 100,
        "cci": 1.5,
        "expected_tickets": 150,
        "tickets_per_agent": 70,
        "agents_needed": 150 / 70,
        "headcount": 3,
    }
    assert [(r["customers"], round(r["agents_needed"], 2), r["headcount"]) for r in records] == [
        (100, 2.14, 3), (150, 3.21, 4), (200, 4.29, 5), (250, 5.36, 6),
    ]  # fmt: skip


def test_forecast_with_growth_reproduces_the_article() -> None:
    grown = run(
        "forecast", "--customers", "100", "--growth", "50/quarter", "--cci", "1.5",
        "--tickets-per-agent", "70",
    )  # fmt: skip

    assert grown.exit_code == 0, grown.output
    assert grown.output == run(*ARTICLE).output


def test_forecast_periods_labels_and_exact_headcount() -> None:
    monthly = run(
        "forecast", "--customers", "150", "--growth", "10%/month", "--periods", "3", "--cci",
        "1.5", "--tickets-per-agent", "75", "--format", "json",
    )  # fmt: skip
    labelled = run(
        "forecast", "--customers", "150,300", "--labels", "2026 H1,2026 H2", "--cci", "1.5",
        "--tickets-per-agent", "75", "--format", "json",
    )  # fmt: skip

    assert monthly.exit_code == 0, monthly.output
    assert [(r["period"], r["customers"]) for r in json.loads(monthly.output)] == [
        ("M1", 150), ("M2", 165), ("M3", 182),  # 181.5 rounds half up
    ]  # fmt: skip
    assert labelled.exit_code == 0, labelled.output
    # 150 × 1.5 = 225 tickets = 3 agents of 75: exactly 3 people, not 4.
    assert [
        (r["period"], r["expected_tickets"], r["agents_needed"], r["headcount"])
        for r in json.loads(labelled.output)
    ] == [("2026 H1", 225, 3, 3), ("2026 H2", 450, 6, 6)]


@pytest.mark.parametrize(
    ("args", "named", "says"),
    [
        (("--customers", "-5"), "--customers", "negative"),
        (("--customers", "100,lots"), "--customers", "whole numbers"),
        (("--customers", "100,150", "--growth", "50/quarter"), "--customers", "one number"),
        (("--tickets-per-agent", "0"), "--tickets-per-agent", "more than zero"),
        (("--tickets-per-agent", "-70"), "--tickets-per-agent", "more than zero"),
        (("--tickets-per-agent", "seventy"), "--tickets-per-agent", "decimal number"),
        (("--cci", "-1.5"), "--cci", "zero or more"),
        (("--cci", "1,5"), "--cci", "decimal number"),
        (("--customers", "100", "--growth", "50/week"), "--growth", "week"),
        (("--customers", "100", "--growth", "fast"), "--growth", "N/UNIT"),
        (("--customers", "100", "--growth", "-50/quarter"), "--growth", "below zero"),
        (("--periods", "3"), "--periods", "3 periods but 4"),
        (("--customers", "100", "--growth", "1/year", "--periods", "0"), "--periods", "0"),
        (("--labels", "Q1,Q2"), "--labels", "2 labels for 4 periods"),
        (("--format", "xml"), "--format", "xml"),
        (("--month", "2026-01"), "--month", "leave them out with --cci"),
        (("--dimension", "plan", "--segment", "free"), "--dimension", "with --cci"),
    ],
    ids=lambda part: " ".join(part) if isinstance(part, tuple) else None,
)
def test_forecast_bad_flags_exit_2_naming_them(
    args: tuple[str, ...], named: str, says: str
) -> None:
    result = run(*ARTICLE, *args)

    assert result.exit_code == 2, result.output
    assert named in result.output
    assert says in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--customers", "100"), "--tickets-per-agent"),
        (("--tickets-per-agent", "70"), "--customers"),
        (("--customers", "100", "--tickets-per-agent", "70", "--dimension", "plan"), "--segment"),
        (("--customers", "100", "--tickets-per-agent", "70", "--segment", "free"), "--dimension"),
    ],
    ids=lambda part: " ".join(part) if isinstance(part, tuple) else None,
)
def test_forecast_missing_flags_are_named_before_any_store_is_read(
    args: tuple[str, ...], named: str, tmp_path: Path
) -> None:
    result = run("forecast", *args, env={"CCI_CLICKHOUSE_URL": f"chdb://{tmp_path / 'none'}"})

    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "none").exists()


# --- generate ------------------------------------------------------------------------------------


def test_generate_writes_the_events_and_the_expected_figures(tmp_path: Path) -> None:
    out = tmp_path / "data"

    result = run(
        "generate", "--users", "50", "--months", "2", "--out", str(out),
        env={"CCI_TIMEZONE": "Europe/Berlin"},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    for name in ("activity.jsonl", "tickets.jsonl", "profiles.jsonl"):
        lines = (out / name).read_text().splitlines()
        assert lines, name
        assert all(isinstance(json.loads(line), dict) for line in lines), name
    expected = json.loads((out / "expected.json").read_text())
    assert (expected["users"], expected["months"]) == (50, 2)
    assert expected["timezone"] == "Europe/Berlin"  # settings reach the recount
    figures = expected["figures"]
    assert figures
    assert {"month", "dimension", "segment", "tickets", "active_users", "cci"} <= set(figures[0])
    # Exactly the recount of the lines written, as of the `now` it states, in its time zone.
    lines = {
        name: [line.encode() for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("activity", "tickets", "profiles")
    }
    now = datetime.fromisoformat(expected["now"])
    settings = load_settings({"CCI_TIMEZONE": "Europe/Berlin"})
    recounted = recount(lines["activity"], lines["tickets"], lines["profiles"], now, settings)
    assert figures == expected_updates(recounted.figures)
    # The two calendar months ending with now's (in Berlin); the current one may still be empty
    # on its first day, the previous one (a whole month of 50 users) is not.
    local = now.astimezone(ZoneInfo("Europe/Berlin"))
    previous = (local.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    totals = {f["month"]: f for f in figures if (f["dimension"], f["segment"]) == ("all", "all")}
    assert previous in totals and set(totals) <= {previous, local.strftime("%Y-%m")}, totals
    assert totals[previous]["active_users"] > 0 and totals[previous]["tickets"] > 0, totals


def test_generate_is_deterministic_for_a_seed_apart_from_the_clock(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert run("generate", "--users", "20", "--months", "1", "--out", str(out)).exit_code == 0

    # Event times are drawn relative to `now`, so compare what does not depend on it.
    def ids(path: Path) -> list[str]:
        return [json.loads(line)["ticket_id"] for line in path.read_text().splitlines()]

    assert ids(first / "tickets.jsonl") == ids(second / "tickets.jsonl")


@pytest.mark.parametrize(
    "url",
    ["http://u:S3cret/Pass4@127.0.0.1:1/db", "https://u:S3cret?Pass4@ch:8443/db"],
)
def test_a_clickhouse_url_with_an_unencoded_password_is_refused_unshown(url: str) -> None:
    """urlsplit sees no password in it, so nothing knew to hide "S3cret/Pass4"."""
    result = run("settings", env={"CCI_CLICKHOUSE_URL": url})

    assert result.exit_code == 2, result.output
    assert "CCI_CLICKHOUSE_URL" in result.output and "percent-encode" in result.output
    assert "S3cret" not in result.output and "Pass4" not in result.output
