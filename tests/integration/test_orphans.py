"""Children die with their parent: SIGKILL of ``cci dev broker`` or ``cci demo`` leaves nothing.

A SIGKILL gives the parent no chance to stop anything, so only the children's own tie to it
(``streams/children.py``) can end them. The descendants are read from ``/proc`` before the kill
(afterwards they would belong to init) and identified by pid and start time, so a reused pid does
not count as a survivor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.dev.broker import LOOPBACK, free_port
from tests.integration.test_demo import ALL_ROW, DemoRun

GONE_WITHIN_S = 5.0
Process = tuple[int, int]  # (pid, start time in clock ticks)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of ``pid``, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> set[Process]:
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[1], []).append(int(entry))
            starts[int(entry)] = stat[2]
    found: set[Process] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add((child, starts[child]))
            todo.append(child)
    return found


def _running(process: Process) -> bool:
    stat = _stat(process[0])
    return stat is not None and stat[2] == process[1] and stat[0] != "Z"


def assert_all_gone(processes: set[Process], output: str) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and any(_running(p) for p in processes):
        time.sleep(0.1)
    survivors = sorted(p for p in processes if _running(p))
    for pid, _ in survivors:  # leave nothing behind, then fail
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid, _ in survivors]
    assert not survivors, f"still running {GONE_WITHIN_S} s after SIGKILL: {commands}\n{output}"


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def assert_port_closes(port: int, name: str) -> None:
    """A process whose main thread has exited shows as a zombie while its other threads (chDB's,
    Tansu's) are still on their way out, holding its sockets: give them the same few seconds."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while _accepts(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    listeners = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    assert not _accepts(port), f"the {name}'s port {port} is still open:\n{listeners}"


def test_sigkill_of_dev_broker_ends_the_broker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCI_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "dev", "broker", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        assert "listening on" in first, first
        children = descendants(process.pid)
        assert children, "the broker runs as a child process"
        process.kill()
        process.wait(10)
        assert_all_gone(children, first)
        assert_port_closes(port, "broker")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_sigkill_of_demo_ends_broker_worker_and_ingest(tmp_path: Path) -> None:
    run = DemoRun(tmp_path, run_for=None)
    try:
        run.wait_for(ALL_ROW, 60.0)
        children = descendants(run.process.pid)
        # The broker, the worker and the worker's ingest process at least.
        assert len(children) >= 3, children
        run.process.kill()
        run.wait(10)
        assert_all_gone(children, run.output)
        for name, (_, port) in run.children().items():
            assert_port_closes(port, name)
    except BaseException:
        run.kill_everything()
        raise
