"""The worker's state: the Faust tables of the dedup and aggregate stages, and the state beside
them that is rebuilt from those tables on recovery."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TP, EventT

from streams import domain
from streams.clock import Clock
from streams.pipeline.aggregate import MonthPartials
from streams.pipeline.deduplicate import PartitionState
from streams.pipeline.emit import Versions
from streams.pipeline.partitioning import partition_for
from streams.settings import Settings
from streams.worker.recovery import RebuildingRecovery


@dataclass
class Runtime:
    """Worker state that is not in a Faust table (rebuilt from the tables on recovery)."""

    settings: Settings
    states: dict[int, PartitionState] = field(default_factory=dict)
    ready: bool = False  # tables recovered since the last rebalance
    pending_updates: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    versions: Versions = field(default_factory=Versions)
    forgotten_before: int = 0  # months before this have had their bookkeeping dropped
    clock: Clock = field(default_factory=Clock)  # what "now" is: retention and versions

    def oldest_month(self) -> int:
        return domain.oldest_retained_month(
            self.clock.now(), self.settings.zone, self.settings.retain_months
        )


class DedupTable(faust.Table):
    """Changelog of the dedup stage, folded straight into ``PartitionState`` on recovery.

    The stage writes chunks with ``send_changelog`` itself; the Faust store holds nothing, so the
    state lives once in memory (as the per-partition index) instead of twice.
    """

    runtime: Runtime

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        oldest = self.runtime.oldest_month()
        dimensions = domain.user_dimensions(self.runtime.settings.extra_dimensions)
        for event in batch:
            partition = event.message.partition
            state = self.runtime.states.get(partition)
            if state is None:
                state = self.runtime.states[partition] = PartitionState(
                    dimensions, self.runtime.settings.max_segment_values
                )
            value = None if event.value is None else orjson.loads(event.value)
            state.apply_chunk(event.key.decode("utf-8"), value, oldest)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        self.runtime.ready = False
        changelog = self.changelog_topic.get_topic_name()
        # A partition we give up, or get (back), is rebuilt from its changelog from the start.
        for tp in revoked | newly_assigned:
            if tp.topic == changelog:
                self.runtime.states.pop(tp.partition, None)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


def month_slot(label: str, facts_partition: int) -> str:
    """Key of one facts partition's partials of a month in the month table."""
    return f"{label}#{facts_partition}"


@dataclass
class Tables:
    """The dedup changelog and the month table (latest partials per month and facts partition)."""

    dedup: DedupTable
    months: Any  # a faust Table of month#partition → that partition's counts of the month
    partitions: int

    def month_state(self, label: str) -> MonthPartials:
        """The month's partials of every facts partition (one table record each, so that a
        record stays as small as one partition's counts)."""
        state: MonthPartials = {}
        for part in range(self.partitions):
            held = self.months.get(month_slot(label, part))
            if held:
                state[str(part)] = held
        return state

    def expire_months(self, partition: int, runtime: Runtime) -> None:
        """Delete expired months of this partition (inside stream iteration, as Faust requires)."""
        oldest = runtime.oldest_month()
        # Keys are month#partition (and plain months, written before the month was split).
        expired = [k for k in self.months if domain.month_from_label(k.partition("#")[0]) < oldest]
        for key in expired:
            if partition_for(key.partition("#")[0], self.partitions) == partition:
                del self.months[key]


def create_tables(app: faust.App, runtime: Runtime, recovery: RebuildingRecovery) -> Tables:
    partitions = runtime.settings.partitions
    dedup_table = DedupTable(
        app,
        name="dedup",
        beacon=app.tables.beacon,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        help="Winning facts per user-month and ticket, as chunks per (month, facts offset)",
    )
    dedup_table.runtime = runtime
    dedup_changelog = dedup_table.changelog_topic.get_topic_name()
    # The dedup state lives outside Faust's store: a rebuilt partition starts from nothing.
    recovery.drop_state = lambda tp: (
        runtime.states.pop(tp.partition, None) if tp.topic == dedup_changelog else None
    )
    app.tables.add(dedup_table)
    month_table = app.Table(
        "month-partials",
        partitions=partitions,
        help="Latest partial counts of every facts partition, per month (key month#partition)",
    )
    return Tables(dedup_table, month_table, partitions)
