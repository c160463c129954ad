"""How far behind the worker's producer is: records waiting and the age of the oldest of them.

A producer that crawls (issue 18: one record per 100 ms while the buffer grew past 900) leaves the
figures wrong with every other sign healthy. The age of the oldest waiting record says so; the
worker's /health answers 503 while it is above ``PRODUCER_STALL_SECONDS``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from faust.sensors import Sensor

from streams import metrics

# A record the broker has not taken this long after it was sent means the worker's output is
# stuck (normal is milliseconds; a rebalance's republish drains in seconds).
PRODUCER_STALL_SECONDS = 30.0


class ProducerWatch(Sensor):  # type: ignore[misc]
    """A Faust sensor counting sends started and finished, sampled by ``sample()``.

    Sends leave in order, so the oldest waiting record entered at the first sample whose count of
    records in (sends started + Faust's send buffer) exceeds the count finished now.
    """

    def __init__(self, buffer_size: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buffer_size = buffer_size or (lambda: 0)  # records in Faust's send buffer
        self.sends_started = 0
        self.sends_finished = 0
        self._entered: deque[tuple[float, int]] = deque()  # (monotonic time, records in by then)

    def on_send_initiated(self, producer: Any, topic: str, message: Any, *sizes: int) -> Any:
        self.sends_started += 1
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self.sends_finished += 1

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.sends_finished += 1

    def pending(self) -> int:
        return max(0, self.sends_started - self.sends_finished) + int(self.buffer_size())

    def sample(self, now: float | None = None) -> float:
        """Record a sample; update the gauges; return the oldest waiting record's age (s)."""
        now = time.monotonic() if now is None else now
        pending = self.pending()
        entered = self.sends_finished + pending
        if not self._entered or self._entered[-1][1] != entered:
            self._entered.append((now, entered))
        while self._entered and self._entered[0][1] <= self.sends_finished:
            self._entered.popleft()
        age = now - self._entered[0][0] if pending and self._entered else 0.0
        metrics.producer_buffer_records.set(pending)
        metrics.producer_oldest_pending_seconds.set(age)
        return age

    def stalled(self) -> bool:
        return self.sample() > PRODUCER_STALL_SECONDS
