"""Table recovery that rebuilds a partition instead of stopping the worker for good.

Faust raises ``ConsistencyError`` when the offset a table has already read from its changelog is
above the broker's end of that changelog (a truncated or recreated topic, or a broker that
misreports its high watermark), and the worker stops. Here that partition's state is dropped and
read again from the start of its changelog, with an error in the log and a counted metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from faust.tables.recovery import Recovery
from faust.types import TP

from streams import metrics

log = logging.getLogger("streams")


def mismatched(offsets: Mapping[TP, int | None], highwaters: Mapping[TP, int | None]) -> set[TP]:
    """Partitions whose read offset is above the changelog's last offset (Faust's check)."""
    return {
        tp
        for tp, offset in offsets.items()
        if offset and highwaters.get(tp) and offset > highwaters[tp]  # type: ignore[operator]
    }


class RebuildingRecovery(Recovery):  # type: ignore[misc]
    """``Recovery`` whose active and standby offsets never exceed the changelog's end.

    ``drop_state(tp)`` forgets what the worker holds for a changelog partition outside Faust's
    store (the dedup state); Faust's memory store is overwritten by the replay.
    """

    drop_state: Callable[[TP], None] = staticmethod(lambda tp: None)

    def add_standby(self, table: Any, tp: TP) -> None:
        super().add_standby(table, tp)
        if table.persisted_offset(tp) is None:
            # Faust keeps a standby's offset across rebalances (and one it was promoted from),
            # while the state it stands for may be gone: nothing held means read from the start.
            self.standby_offsets[tp] = None

    async def _build_offsets(
        self, consumer: Any, tps: set[TP], destination: Any, title: str
    ) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if destination is self.active_offsets:
            highwaters = self.active_highwaters
        elif destination is self.standby_offsets and tps:
            # Faust checks standbys against highwaters it builds only later, and then stops.
            ends = await consumer.highwaters(*tps)
            highwaters = {tp: -1 if end is None else end - 1 for tp, end in ends.items()}
        else:
            return
        rebuilt = sorted(mismatched(destination, highwaters))
        earliest = await consumer.earliest_offsets(*rebuilt) if rebuilt else {}
        for tp in rebuilt:
            log.error(
                "state of %s read up to offset %d, above the end of its changelog (%d): "
                "rebuilding it from the start of the changelog",
                tp,
                destination[tp],
                highwaters[tp],
            )
            metrics.state_rebuilds.labels(tp.topic).inc()
            self.drop_state(tp)
            # Faust's convention: the offset before the first one to read.
            destination[tp] = (earliest.get(tp) or 0) - 1
