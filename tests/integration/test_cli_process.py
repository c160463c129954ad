"""The CLI as a real process: `python -m streams` runs it, a bad setting exits 2 naming it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.harness import run_cci

UNREACHABLE_BOOTSTRAP = "127.0.0.1:1"


def process_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CCI_")}
    return {**env, "CCI_KAFKA_BOOTSTRAP": UNREACHABLE_BOOTSTRAP, **extra}


def test_python_m_streams_runs_the_cli(tmp_path: Path) -> None:
    completed = run_cci("--help", env=process_env(), cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("Usage: cci ")


def test_the_process_exits_2_on_a_bad_environment_value(tmp_path: Path) -> None:
    completed = run_cci("topics", "create", env=process_env(CCI_PARTITIONS="x"), cwd=tmp_path)

    assert completed.returncode == 2
    assert "CCI_PARTITIONS" in completed.stderr
    assert "Traceback" not in completed.stderr
