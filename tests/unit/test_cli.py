"""The ``cci`` command: help for every command, and bad input that exits non-zero naming it.

Nothing here needs a broker: every failing case must stop before one would be contacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from streams.cli import cli
from streams.settings import Settings

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
        (("bench",), "Measure the pipeline against a raw consumer"),
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

    for command in ("settings", "dev", "topics", "worker", "generate", "produce", "demo"):
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


def test_produce_without_a_topic_names_the_flag(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u1"}\n')

    result = run("produce", str(events))

    assert result.exit_code == 2, result.output
    assert "--topic" in result.output


def test_producing_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"

    result = run("produce", str(missing), "--topic", "t")

    assert result.exit_code == 2, result.output
    assert "missing.jsonl" in result.output
    assert "does not exist" in result.output


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
    totals = [f for f in figures if (f["dimension"], f["segment"]) == ("all", "all")]
    assert 1 <= len(totals) <= 2
    assert all(f["active_users"] > 0 for f in totals)
    assert sum(f["tickets"] for f in totals) > 0


def test_generate_is_deterministic_for_a_seed_apart_from_the_clock(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert run("generate", "--users", "20", "--months", "1", "--out", str(out)).exit_code == 0

    # Event times are drawn relative to `now`, so compare what does not depend on it.
    def ids(path: Path) -> list[str]:
        return [json.loads(line)["ticket_id"] for line in path.read_text().splitlines()]

    assert ids(first / "tickets.jsonl") == ids(second / "tickets.jsonl")


# --- the real process ----------------------------------------------------------------------------


def _process_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CCI_")}
    return {**env, "CCI_KAFKA_BOOTSTRAP": UNREACHABLE_BOOTSTRAP, **extra}


def test_python_m_streams_runs_the_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "streams", "--help"],
        capture_output=True,
        text=True,
        env=_process_env(),
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("Usage: cci ")


def test_the_process_exits_2_on_a_bad_environment_value() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "streams", "topics", "create"],
        capture_output=True,
        text=True,
        env=_process_env(CCI_PARTITIONS="x"),
        timeout=60,
    )

    assert completed.returncode == 2
    assert "CCI_PARTITIONS" in completed.stderr
    assert "Traceback" not in completed.stderr
