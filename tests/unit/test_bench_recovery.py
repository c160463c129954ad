"""``cci bench --recovery``'s report: one line per fail-over, and exit 1 unless all were exact."""

from __future__ import annotations

import json

from streams.bench.recovery import FailoverRun, RecoveryReport, output


def _report(*runs: FailoverRun) -> RecoveryReport:
    return RecoveryReport("2026-12-02T02:00:00+00:00", 100, 3, 210, 4, 10.0, 12.5, list(runs))


def test_the_table_shows_both_runs_from_the_kill_and_the_load() -> None:
    off = FailoverRun(0, 100, 0, 10.5, 19.25, 20.0, False, True)
    on = FailoverRun(1, 110, 110, 9.0, 12.0, 12.75, True, True)

    text, status = output(_report(off, on), as_json=False)

    assert status == 0
    lines = text.splitlines()
    assert "210 user-months over 4 partitions" in lines[0] and "load average 12.5" in lines[0]
    assert lines[2].split() == ["0", "100", "0", "10.5", "s", "19.2", "s", "20.0", "s", "no"]
    assert lines[3].split()[-1] == "yes"


def test_a_run_that_never_became_exact_fails_the_command_and_says_why() -> None:
    wrong = FailoverRun(1, 100, 100, 9.0, None, None, True, False, ["2026-11|all|all: …"])

    text, status = output(_report(wrong), as_json=False)
    as_json, _ = output(_report(wrong), as_json=True)

    assert status == 1
    assert "—" in text and "2026-11|all|all: …" in text
    assert json.loads(as_json)["runs"][0]["healthy_after_s"] is None
