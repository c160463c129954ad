"""The peer phase of ``cci bench``: each peer's process through the backlog until its output equals
the recount; then it is stopped, before the next peer or the worker starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from pathlib import Path

from streams import children
from streams.bench.measure import memory_of, per_second, ratio, seconds_between
from streams.bench.outputs import OutputTail, PeerDecoder, wait_settled
from streams.bench.peers import Peer
from streams.bench.peers.environments import peer_environment
from streams.bench.phase import (
    METRICS_POLL_S,
    START_TIMEOUT_S,
    STATE_DIR,
    BenchFailed,
    Say,
    log_tail,
    summary,
)
from streams.bench.report import PeerRun
from streams.bench.workload import Workload
from streams.dev.broker import terminate_group


def _status_lines(path: Path) -> dict[str, dict[str, object]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {entry["event"]: entry for entry in map(json.loads, filter(None, lines))}


async def run_peer(
    peer: Peer,
    python: Path,
    bootstrap: str,
    env: dict[str, str],
    workload: Workload,
    stack: contextlib.ExitStack,
    say: Say,
) -> PeerRun:
    """Run ``peer`` with ``python`` (its environment's interpreter) over the loaded backlog."""
    status_path = STATE_DIR / f"peer-{peer.name}-status.jsonl"
    log_path = STATE_DIR / f"peer-{peer.name}.log"
    command = [
        str(python),
        str(peer.script),
        "--output-topic",
        peer.output_topic,
        "--state-dir",
        str(STATE_DIR / f"peer-{peer.name}-state"),
        "--status-file",
        str(status_path),
    ]
    with log_path.open("wb") as log:
        process = children.popen(
            command,
            env=peer_environment(peer, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(terminate_group, process)
    what = f"peer ({peer.title})"
    say(f"{what}: pid {process.pid}, log {log_path}; waiting for its first event…")

    def problem() -> str | None:
        code = process.poll()
        return None if code is None else f"the peer exited with {code}:\n{log_tail(log_path)}"

    deadline = time.monotonic() + START_TIMEOUT_S
    while "first_message" not in (status := _status_lines(status_path)):
        if (trouble := problem()) is not None:
            raise BenchFailed(trouble)
        if time.monotonic() > deadline:
            raise BenchFailed(f"{what} consumed nothing in {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(METRICS_POLL_S)
    first_ms = int(float(str(status["first_message"]["at"])) * 1000)
    start_rss = status.get("ready", {}).get("rss_bytes")
    async with OutputTail(bootstrap, peer.output_topic, PeerDecoder()) as tail:
        settled = await wait_settled(tail, workload.expected, problem)
    memory = memory_of(process.pid, with_children=True)
    terminate_group(process)  # before the next process starts: the machine is its alone
    run = PeerRun(name=peer.title, exact=settled.exact, difference=settled.difference)
    run.peak_rss_bytes = memory.peak_rss_bytes
    run.start_rss_bytes = start_rss if isinstance(start_rss, int) else None
    run.first_output_seconds = seconds_between(first_ms, tail.first_record_ms)
    run.seconds = seconds_between(first_ms, settled.at_ms)
    run.events_per_s = per_second(workload.events, run.seconds)
    if memory.rss_bytes is not None and run.start_rss_bytes is not None:
        run.rss_growth_bytes_per_user_month = ratio(
            memory.rss_bytes - run.start_rss_bytes, workload.user_months
        )
    say(summary(what, run.exact, run.events_per_s, run.seconds))
    return run
