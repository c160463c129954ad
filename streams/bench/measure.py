"""Pure measurement helpers of ``cci bench``: nothing here talks to Kafka or starts processes.

Times are epoch milliseconds (Kafka record timestamps and ``time.time()`` of one machine).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

FigureKey = tuple[str, str, str]  # (month, dimension, segment)
Figure = tuple[int, int]  # (tickets, active_users)
EMPTY: Figure = (0, 0)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value that at least ``q`` % of the values do not
    exceed (no interpolation, so it is always an observed value). None without values."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def visibility_latencies(
    produced_ms: Sequence[int], published: Sequence[tuple[int, int]], base: int
) -> list[int | None]:
    """Latency of each event from a counter's published values.

    ``produced_ms[k - 1]`` is when event k (in produce order) was produced; each event raises the
    counter by one. ``published`` are (timestamp, count) in publication order. Event k counts as
    visible at the first publication whose count reaches ``base + k``; its latency is that
    timestamp minus its produce time. None for events no publication reached.
    """
    latencies: list[int | None] = []
    index = 0
    for k, produced in enumerate(produced_ms, start=1):
        target = base + k
        while index < len(published) and published[index][1] < target:
            index += 1
        if index == len(published):
            latencies.extend([None] * (len(produced_ms) - k + 1))
            break
        latencies.append(published[index][0] - produced)
    return latencies


class FigureHistory:
    """The latest figure per key of an output topic, and when each last changed.

    Fed records in offset order per key; ``settled_at`` is the timestamp of the last record that
    changed a figure: the moment the topic first held what it holds now.
    """

    def __init__(self) -> None:
        self.latest: dict[FigureKey, Figure] = {}
        self.changed_at: dict[FigureKey, int] = {}

    def apply(self, key: FigureKey, figure: Figure, timestamp_ms: int) -> None:
        if self.latest.get(key, EMPTY) != figure:
            self.latest[key] = figure
            self.changed_at[key] = timestamp_ms

    def figures(self) -> dict[FigureKey, Figure]:
        """Non-empty figures: a segment published with zeros equals an absent one (the recount's
        view, see ``streams/pipeline/recount.py``)."""
        return {key: figure for key, figure in self.latest.items() if figure != EMPTY}

    def settled_at(self) -> int | None:
        return max(self.changed_at.values(), default=None)


def describe_difference(
    expected: dict[FigureKey, Figure], actual: dict[FigureKey, Figure], limit: int = 10
) -> list[str]:
    """Human-readable lines for the figures that differ (at most ``limit``)."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            want, got = expected.get(key, EMPTY), actual.get(key, EMPTY)
            lines.append(f"{'|'.join(key)}: expected {want}, got {got}")
    return lines[:limit] + ([f"… {len(lines) - limit} more"] if len(lines) > limit else [])


def per_second(events: int, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return events / seconds


def seconds_between(start_ms: int, end_ms: int | None) -> float | None:
    """Seconds from ``start_ms`` to ``end_ms`` (both Kafka-style ms timestamps of one host's
    clock); None when there is no end."""
    return None if end_ms is None else (end_ms - start_ms) / 1000


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# --- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    rss_bytes: int | None
    peak_rss_bytes: int | None


def parse_proc_status(text: str) -> Memory:
    """VmRSS and VmHWM (the peak RSS) of a ``/proc/PID/status`` text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            number, _, unit = rest.strip().partition(" ")
            values[name] = int(number) * (1024 if unit.strip() == "kB" else 1)
    return Memory(values.get("VmRSS"), values.get("VmHWM"))


def memory_of(pid: int | str, *, with_children: bool = False) -> Memory:
    """Memory of a running process (``"self"`` for this one); unknown once it has ended.

    ``with_children`` adds its child processes (the worker's ingest process): RSS summed, and
    the peaks summed too, an upper bound of the peak of the whole, since they need not coincide.
    """
    try:
        memory = parse_proc_status(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return Memory(None, None)
    if not with_children:
        return memory
    for child in _children(pid):
        part = memory_of(child)
        memory = Memory(
            _add(memory.rss_bytes, part.rss_bytes), _add(memory.peak_rss_bytes, part.peak_rss_bytes)
        )
    return memory


def _children(pid: int | str) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return [int(child) for task in tasks for child in (task / "children").read_text().split()]
    except OSError:
        return []


def _add(total: int | None, part: int | None) -> int | None:
    return total if part is None or total is None else total + part


def metric_values(text: str, names: Iterable[str]) -> dict[str, float | None]:
    """The value of each named metric in a Prometheus text page, summed over its labels (counters
    by their ``_total`` sample); None for a metric the page does not have."""
    wanted = set(names)
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.endswith(("_created", "_bucket", "_count", "_sum")):
                continue
            for candidate in (name, name.removesuffix("_total")):
                if candidate in wanted:
                    found[candidate] = found.get(candidate, 0.0) + sample.value
                    break
    return {name: found.get(name) for name in wanted}
