"""The wall clock the pipeline asks for "now": months, retention, too-late and future event times,
and versions are decided against ``Clock.now()``, never ``datetime.now`` directly.

``clock_for(settings)`` is the real clock, or with ``CCI_CLOCK_OFFSET_FILE`` set (testing only:
``cci soak`` moves a worker through simulated months) the real time plus the seconds that file
holds. ``time.time()`` is left alone: Kafka record timestamps, timeouts and timers keep real time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.settings import Settings

REREAD_S = 0.2  # the offset file is read at most this often: now() is asked per batch


class Clock:
    """The real wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock(Clock):
    """Real time plus seconds read (as text) from a file, re-read at most every ``reread_s``.

    A missing, empty or unreadable file keeps the last value (0 at first): the soak rewrites the
    file while the worker runs, and a read may fall between its truncation and its write.
    """

    def __init__(self, path: Path, reread_s: float = REREAD_S) -> None:
        self.path = path
        self.reread_s = reread_s
        self.seconds = 0.0
        self._read_at: float | None = None

    def offset(self) -> float:
        moment = time.monotonic()
        if self._read_at is None or moment - self._read_at >= self.reread_s:
            self._read_at = moment
            try:
                text = self.path.read_text(encoding="ascii").strip()
                if text:
                    self.seconds = float(text)
            except (OSError, ValueError):
                pass
        return self.seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset(), UTC)


def clock_for(settings: Settings) -> Clock:
    """The clock ``settings`` ask for: the real one unless ``CCI_CLOCK_OFFSET_FILE`` is set."""
    path = settings.clock_offset_file
    return OffsetClock(Path(path)) if path else Clock()
