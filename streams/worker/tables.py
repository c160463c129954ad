"""The worker's state: the Faust tables of the dedup and aggregate stages, and the state beside
them that is rebuilt from those tables on recovery."""

from __future__ import annotations

import logging
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

log = logging.getLogger("streams")


@dataclass
class Runtime:
    """Worker state that is not in a Faust table (rebuilt from the tables on recovery).

    ``states`` holds the facts partitions this worker owns, and only those: everything that
    publishes (partials, metrics, the republish after recovery) reads it. ``standbys`` holds the
    warm copies of partitions other workers own (``CCI_STANDBY_REPLICAS``), fed by their
    changelogs and never published from; one moves into ``states`` when its owner fails.
    """

    settings: Settings
    states: dict[int, PartitionState] = field(default_factory=dict)
    standbys: dict[int, PartitionState] = field(default_factory=dict)
    standby_partitions: set[int] = field(default_factory=set)
    # Last dedup-changelog offset folded into the state held for a partition (either role).
    changelog_offsets: dict[int, int] = field(default_factory=dict)
    ready: bool = False  # tables recovered since the last rebalance
    pending_updates: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    versions: Versions = field(default_factory=Versions)
    forgotten_before: int = 0  # months before this have had their bookkeeping dropped
    clock: Clock = field(default_factory=Clock)  # what "now" is: retention and versions

    def oldest_month(self) -> int:
        return domain.oldest_retained_month(
            self.clock.now(), self.settings.zone, self.settings.retain_months
        )

    def held_state(self, partition: int) -> PartitionState:
        """The state a changelog record of ``partition`` folds into, by the partition's role."""
        held = self.standbys if partition in self.standby_partitions else self.states
        state = held.get(partition)
        if state is None:
            dimensions = domain.user_dimensions(self.settings.extra_dimensions)
            state = held[partition] = PartitionState(dimensions, self.settings.max_segment_values)
        return state

    def assign_roles(self, owned: set[int], standby: set[int], fresh: set[int]) -> list[int]:
        """Move the states to the roles of a new assignment; return the partitions promoted from
        standby to owned (their state is kept, so recovery reads only the changelog's tail).

        A state whose partition is in neither role, or ``fresh`` (not held before this
        assignment, so whatever is held for it is stale), is dropped and read again from the
        start of its changelog. A demoted one is kept as the standby: folding the changelog again
        from its last read offset is idempotent.
        """
        for partition in fresh:
            self.drop(partition)
        promoted = sorted(p for p in self.standbys if p in owned)
        demoted = [p for p in self.states if p in standby and p not in owned]
        for partition in promoted:
            self.states[partition] = self.standbys.pop(partition)
        for partition in demoted:
            self.standbys[partition] = self.states.pop(partition)
        for partition in set(self.states) - owned:
            self.drop(partition)
        for partition in set(self.standbys) - standby:
            self.drop(partition)
        self.standby_partitions = set(standby)
        return promoted

    def drop(self, partition: int) -> None:
        """Forget what is held for ``partition``: it is read again from its changelog's start."""
        self.states.pop(partition, None)
        self.standbys.pop(partition, None)
        self.changelog_offsets.pop(partition, None)

    def changelog_offset(self, partition: int) -> int | None:
        """The offset recovery may resume ``partition`` after, if a state is held for it."""
        if partition in self.states or partition in self.standbys:
            return self.changelog_offsets.get(partition)
        return None


class DedupTable(faust.Table):
    """Changelog of the dedup stage, folded straight into ``PartitionState`` on recovery.

    The stage writes chunks with ``send_changelog`` itself; the Faust store holds nothing, so the
    state lives once in memory (as the per-partition index) instead of twice.
    """

    runtime: Runtime

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        runtime = self.runtime
        oldest = runtime.oldest_month()
        standbys_fed: set[int] = set()
        for event in batch:
            partition = event.message.partition
            state = runtime.held_state(partition)
            value = None if event.value is None else orjson.loads(event.value)
            state.apply_chunk(event.key.decode("utf-8"), value, oldest)
            runtime.changelog_offsets[partition] = event.message.offset
            if partition in runtime.standby_partitions:
                standbys_fed.add(partition)
        for partition in standbys_fed:
            # The owner tombstones expired months; a standby forgets them itself, or its memory
            # would grow by a month every month.
            runtime.standbys[partition].expire(oldest)

    def _on_changelog_sent(self, fut: Any) -> None:
        super()._on_changelog_sent(fut)
        written = fut.result()
        partition = written.topic_partition.partition
        if partition in self.runtime.states:
            # The owned state already holds what it wrote: a rebalance that leaves it here
            # need not read it back (Faust flushes the producer before recovery reads).
            offsets = self.runtime.changelog_offsets
            offsets[partition] = max(offsets.get(partition, -1), written.offset)

    def persisted_offset(self, tp: TP) -> int | None:
        """Where Faust resumes reading ``tp``: after what the held state already folded (a
        promoted standby reads only the tail), or from the start when nothing is held."""
        if tp.topic != self.changelog_topic.get_topic_name():
            return None
        return self.runtime.changelog_offset(tp.partition)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        self.runtime.ready = False
        changelog = self.changelog_topic.get_topic_name()
        assignor = self.app.assignor
        owned = {tp.partition for tp in assignor.assigned_actives() if tp.topic == changelog}
        standby = {tp.partition for tp in assignor.assigned_standbys() if tp.topic == changelog}
        fresh = {tp.partition for tp in newly_assigned if tp.topic == changelog}
        for partition in self.runtime.assign_roles(owned, standby, fresh):
            log.info(
                "facts partition %d: taking over its standby state (%d user-months, changelog "
                "read up to offset %s); recovery reads only the rest",
                partition,
                self.runtime.states[partition].user_months(),
                self.runtime.changelog_offsets.get(partition),
            )
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


class MonthTable(faust.Table):
    """The month table, without its standby partitions' records: Faust's memory store has no
    persisted offset, so a promoted partition is read from the start of its changelog anyway,
    and a standby copy would only take memory."""

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        is_standby = self.app.assignor.is_standby
        super().apply_changelog_batch([e for e in batch if not is_standby(e.message.tp)])


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
        # A record is a chunk of many facts: a standby folds each as it comes (Faust's default
        # holds back up to 1,000, which a quiet partition may never fill before a fail-over).
        standby_buffer_size=1,
        help="Winning facts per user-month and ticket, as chunks per (month, facts offset)",
    )
    dedup_table.runtime = runtime
    dedup_changelog = dedup_table.changelog_topic.get_topic_name()
    # The dedup state lives outside Faust's store: a rebuilt partition starts from nothing.
    recovery.drop_state = lambda tp: (
        runtime.drop(tp.partition) if tp.topic == dedup_changelog else None
    )
    app.tables.add(dedup_table)
    month_table = MonthTable(
        app,
        name="month-partials",
        beacon=app.tables.beacon,
        partitions=partitions,
        help="Latest partial counts of every facts partition, per month (key month#partition)",
    )
    app.tables.add(month_table)
    return Tables(dedup_table, month_table, partitions)
