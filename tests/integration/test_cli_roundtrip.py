"""The README's path, through the real commands: generate → topics create → produce → worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.dev.generate import load_expected
from tests.integration.harness import run_cci, wait_for_figures, worker_env


def cci(*args: str, env: dict[str, str], cwd: Path) -> str:
    result = run_cci(*args, env=env, cwd=cwd)
    assert result.returncode == 0, f"cci {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize(
    "settings_env",
    [
        {},
        # Months in a DST zone, and only some activity types make a user active.
        {"CCI_TIMEZONE": "America/New_York", "CCI_ACTIVE_ACTIVITIES": "login,purchase"},
    ],
    ids=["defaults", "new-york-login-purchase"],
)
def test_generated_expected_cci_is_reproduced_by_the_worker(
    pipeline, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    pipeline.env.update(settings_env)
    env = worker_env(pipeline.bootstrap, tmp_path / "cli", **settings_env)
    out = tmp_path / "generated"
    cci(
        "generate",
        "--users",
        "300",
        "--months",
        "2",
        "--seed",
        "3",
        "--out",
        str(out),
        env=env,
        cwd=tmp_path,
    )
    created = cci("topics", "create", env=env, cwd=tmp_path)
    assert "exists" in created  # the fixture made them: idempotent
    for name, topic in (
        ("profiles", "user-profile"),
        ("activity", "user-activity"),
        ("tickets", "ticket-created"),
    ):
        produced = cci(
            "produce", str(out / f"{name}.jsonl"), "--topic", topic, env=env, cwd=tmp_path
        )
        lines = sum(1 for line in (out / f"{name}.jsonl").read_bytes().splitlines() if line.strip())
        assert f"produced {lines} records" in produced
    pipeline.worker()
    wait_for_figures(pipeline.bootstrap, load_expected(out / "expected.json"))
