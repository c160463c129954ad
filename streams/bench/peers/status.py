"""What every peer process of ``cci bench`` reports and reads, with no stream framework imported:
status lines for the bench, its own RSS, and a clock read once a second."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NOW_REFRESH_S = 1.0  # "now" (retention, future timestamps) is read once a second, not per event


class StatusFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.first_message_seen = False

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a") as status:
            status.write(json.dumps({"event": event, "at": time.time(), **fields}) + "\n")

    def first_message(self) -> None:
        if not self.first_message_seen:
            self.first_message_seen = True
            self.write("first_message")


def rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Clock:
    """datetime.now(UTC), refreshed at most once a second."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.read_at = time.monotonic()

    def __call__(self) -> datetime:
        if time.monotonic() - self.read_at > NOW_REFRESH_S:
            self.now = datetime.now(UTC)
            self.read_at = time.monotonic()
        return self.now


def peer_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every peer takes from ``cci bench`` (a peer adds its own)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--status-file", type=Path)
    return parser
