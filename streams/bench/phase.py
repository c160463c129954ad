"""What every phase of ``cci bench`` shares: errors, timeouts, progress lines, state folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streams.bench.measure import Figure, FigureKey

STATE_DIR = Path(".cci/bench")
START_TIMEOUT_S = 180.0  # for a process's first event (the first group join alone takes ~7 s)
STALL_TIMEOUT_S = 120.0  # an output that stops changing short of the recount for this long fails
METRICS_POLL_S = 0.1

Say = Callable[[str], None]
Figures = dict[FigureKey, Figure]


class BenchFailed(RuntimeError):
    """A part of the bench could not run (a process died or never started)."""


class BenchUsageError(ValueError):
    """A flag's value cannot work (found out only once the data was generated)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def summary(what: str, exact: bool, events_per_s: float | None, seconds: float | None) -> str:
    if not exact:
        return f"{what}: differs from the recount"
    return f"{what}: exact, {events_per_s or 0:,.0f} events/s ({seconds or 0:.2f} s)"
