"""Where a stream partition starts reading after a rebalance, and what Faust may hand its agents
meanwhile, and a partition that stops moving.

Three rules, all plain Kafka (no broker quirk):

1. A partition starts at the group's committed offset, or at its beginning when the group has
   committed none (``auto_offset_reset="earliest"``). aiokafka's ``seek_to_committed`` seeks only
   where an offset above 0 is committed, so a worker restarted after one killed before its first
   commit read on past facts nobody applied.

2. Nothing fetched before that seek survives it. Faust resumes the stream partitions, then seeks
   them from its consumer thread while its fetcher keeps running on the worker's loop. A record
   fetched ahead (offset 195, commit 95) could reach an agent first and raise Faust's read offset;
   the records 95–194 fetched after the seek then fell below it and were dropped as already read,
   195 was acked over a hole, and the commit never moved again (two workers, 1 run in 10;
   docs/embedded-broker.md). So every fetch is stamped with the number of seeks made before it, a
   seek records the position it set (``SeekLedger``), and on the worker's loop, before any record
   of a fetch goes on, the partition's read offset is set back to the new position and records of
   fetches older than the partition's last seek are dropped: the seek makes the consumer fetch
   them again. A record handed on twice is harmless: deduplication is idempotent.

3. A partition that stops moving is read again. If records of a stream partition are lost between
   the fetch and the agent anyway (a race of Faust's fetcher with a rebalance that rule 2 does not
   cover: two workers, one killed, in 1 CI run of many: ``cci-facts/3`` committed at 26, its end
   at 27, nothing being processed, for two minutes), nothing fetches them again: the consumer's
   position is past them, and a later record handed on made Faust commit over them (it takes a
   jump in offsets for offsets without a record). So a jump holds the commit back, also before a
   first commit (``_HoldsTheCommitAtAHole``; records deleted by retention excepted), and a
   partition whose committed and handed-on offsets have not moved for ``STUCK_COMMIT_SECONDS``
   while its end is past the commit and none of its records is being processed is sought back
   to its commit (``StuckCommits``, ``watch_commits``), with a warning and
   ``cci_stream_rereads_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams import metrics

log = logging.getLogger("streams")

# A stream partition whose commit has not moved for this long, with records past it and none of
# them being processed, is read again from its commit: long enough for any record to be handled
# (a facts record takes milliseconds) and for a commit to follow (Faust commits every 2.8 s).
STUCK_COMMIT_SECONDS = 30.0
COMMIT_WATCH_INTERVAL_S = 5.0


class SeekLedger:
    """The seeks of one consumer: written by its thread, read by the worker's loop.

    Each write is one dict item assignment (atomic under the GIL), made in the same step as the
    seeks themselves, so a fetch stamped with ``epoch`` saw every seek up to that number.
    """

    def __init__(self) -> None:
        self.epoch = 0
        # partition → (the seek's number, the offset it set)
        self.seeks: dict[Any, tuple[int, int]] = {}
        # partition → the number of the last seek applied on the worker's loop
        self._applied: dict[Any, int] = {}

    def record(self, positions: Mapping[Any, int]) -> None:
        """Note seeks just made (call in the same synchronous step as the seeks)."""
        self.epoch += 1
        for tp, offset in positions.items():
            self.seeks[tp] = (self.epoch, offset)

    def predates_seek(self, tp: Any, fetch_epoch: int) -> bool:
        """True when ``tp`` was sought after a fetch stamped ``fetch_epoch`` was made."""
        seek = self.seeks.get(tp)
        return seek is not None and seek[0] > fetch_epoch

    def unapplied(self) -> list[tuple[Any, int]]:
        """The seeks not yet applied to the consumer's read offsets, marked applied."""
        pending = []
        for tp, (epoch, offset) in list(self.seeks.items()):
            if self._applied.get(tp) != epoch:
                self._applied[tp] = epoch
                pending.append((tp, offset))
        return pending


class StampedRecords(dict):  # type: ignore[type-arg]
    """A fetch's records by partition, with the number of seeks made before the fetch."""

    def __init__(self, records: Mapping[Any, Any], epoch: int) -> None:
        super().__init__(records)
        self.epoch = epoch


async def seek_to_committed_or_beginning(
    consumer: AIOKafkaConsumer,
    skip_topics: frozenset[str] = frozenset(),
    ledger: SeekLedger | None = None,
) -> dict[TopicPartition, int | None]:
    """Seek every assigned partition (but those of ``skip_topics``) to its committed offset, or
    to its beginning when none is committed; return the committed offsets, as aiokafka does."""
    committed: dict[TopicPartition, int | None] = {}
    for tp in consumer.assignment():
        committed[tp] = await consumer.committed(tp)
    streams = {tp: offset for tp, offset in committed.items() if tp.topic not in skip_topics}
    await seek_positions(consumer, streams, ledger)
    return committed


async def seek_positions(
    consumer: AIOKafkaConsumer, positions: Mapping[Any, int | None], ledger: SeekLedger | None
) -> dict[TopicPartition, int]:
    """Seek each partition still assigned to its offset in ``positions`` (None: its beginning)
    and record the seeks in ``ledger``; return where each was sought."""
    wanted = {TopicPartition(tp.topic, tp.partition): offset for tp, offset in positions.items()}
    unknown = [tp for tp, offset in wanted.items() if offset is None]
    beginnings = await consumer.beginning_offsets(unknown) if unknown else {}
    # From here on one synchronous step: no fetch can land between the seeks and their record.
    assigned = consumer.assignment()
    sought: dict[TopicPartition, int] = {}
    for tp, offset in wanted.items():
        position = offset if offset is not None else beginnings.get(tp)
        if tp in assigned and position is not None:
            consumer.seek(tp, position)
            sought[tp] = position
    if ledger is not None:
        ledger.record(sought)
    return sought


class StuckCommits:
    """Which stream partitions have stopped moving (rule 3): the rule alone, without Faust.

    Each check gives, per partition: its committed offset, the offset last handed on, its end, and
    whether a record of it is being processed. A partition is stuck once its committed and
    handed-on offsets stayed the same for ``stuck_after`` seconds of checks in which its end was
    past the commit and none of its records was being processed.
    """

    def __init__(self, stuck_after: float = STUCK_COMMIT_SECONDS) -> None:
        self.stuck_after = stuck_after
        # partition → ((committed, handed on), when the partition was first seen so)
        self._since: dict[Any, tuple[tuple[int | None, int | None], float]] = {}

    def check(
        self,
        partitions: Mapping[Any, tuple[int | None, int | None, int | None, bool]],
        now: float,
    ) -> dict[Any, int | None]:
        """``partitions``: partition → (committed, handed on, end, busy). Returns partition →
        committed offset (None: nothing committed) for each one to read again."""
        for tp in [tp for tp in self._since if tp not in partitions]:
            del self._since[tp]
        stuck: dict[Any, int | None] = {}
        for tp, (committed, handed_on, end, busy) in partitions.items():
            progress = (committed, handed_on)
            behind = end is not None and end > (committed or 0)
            seen = self._since.get(tp)
            if busy or not behind or seen is None or seen[0] != progress:
                self._since[tp] = (progress, now)
            elif now - seen[1] >= self.stuck_after:
                stuck[tp] = committed
                self._since[tp] = (progress, now)  # again only after another stuck_after
        return stuck

    def forget(self) -> None:
        """A rebalance: every partition starts over."""
        self._since.clear()


def deleted_before_read(
    stuck: Mapping[Any, int | None], beginnings: Mapping[Any, int | None]
) -> dict[Any, int]:
    """The stuck partitions whose first records not committed were deleted since (retention: a
    group further behind than the topic's retention), each with its beginning now. Nothing can
    read those records again, so their commit moves past them instead of holding for ever."""
    deleted: dict[Any, int] = {}
    for tp, floor in stuck.items():
        beginning = beginnings.get(tp)
        if floor is not None and beginning is not None and beginning > floor:
            deleted[tp] = beginning
    return deleted


def watch_commits(app: Any, topics: Iterable[str], every: float = COMMIT_WATCH_INTERVAL_S) -> None:
    """Every ``every`` seconds, read the worker's stuck stream partitions of ``topics`` again
    (rule 3)."""
    names = frozenset(topics)
    rule = StuckCommits()

    @app.timer(every, name="read_stuck_partitions_again")
    async def read_stuck_partitions_again() -> None:
        try:
            await _read_stuck_partitions_again(app, names, rule)
        except Exception:  # a timer that raises stops the worker; this one is only a safety net
            log.exception("checking the stages' partitions for a commit that stopped moving")


async def _read_stuck_partitions_again(app: Any, names: frozenset[str], rule: StuckCommits) -> None:
    """One check of ``watch_commits``: read the stuck partitions of ``names`` again."""
    consumer = app.consumer
    if app.rebalancing or not consumer.flow_active:
        rule.forget()
        return
    busy = {message.tp for message in list(consumer._unacked_messages)}
    assigned = consumer.assignment()  # aiokafka's: Faust's active set can lag it in a rebalance
    observed = {
        tp: (
            consumer.commit_floor(tp),
            consumer._read_offset.get(tp),
            consumer.highwater(tp),
            tp in busy,
        )
        for tp in list(consumer._get_active_partitions())
        if tp.topic in names and tp in assigned
    }
    stuck = rule.check(observed, time.monotonic())
    if not stuck:
        return
    deleted = deleted_before_read(stuck, await consumer.earliest_offsets(*stuck))
    read_again: dict[Any, int | None] = {}
    for tp, floor in sorted(stuck.items()):
        if tp in deleted:
            log.error(
                "%s/%d: its records from offset %s to %d were deleted (retention) before this "
                "worker read them; its figures lack them. Carrying on from offset %d",
                tp.topic,
                tp.partition,
                floor,
                deleted[tp] - 1,
                deleted[tp],
            )
            consumer._committed_offset[tp] = deleted[tp]  # the hold lets the commit move on
            continue
        log.warning(
            "%s/%d: its committed offset (%s) has not moved for %.0f s while its end is "
            "offset %s and none of its records is being processed: reading it again from "
            "its commit (deduplication absorbs what was already applied)",
            tp.topic,
            tp.partition,
            floor,
            rule.stuck_after,
            observed[tp][2],
        )
        metrics.stream_rereads.labels(tp.topic).inc()
        read_again[tp] = floor
    if read_again:
        await consumer.read_again(read_again)


def drop_records_fetched_before_a_seek(
    records: Mapping[Any, Any], ledger: SeekLedger
) -> Mapping[Any, Any]:
    """The records of a fetch without those of partitions sought since it was made."""
    epoch = getattr(records, "epoch", None)
    if epoch is None or not records:
        return records
    stale = [tp for tp in records if ledger.predates_seek(tp, epoch)]
    if not stale:
        return records
    return {tp: batch for tp, batch in records.items() if tp not in stale}


class _SeeksToCommittedOrBeginning:
    """Mixin for a Faust aiokafka consumer thread: seeks (rule 1) and stamps fetches (rule 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seek_ledger = SeekLedger()

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        thread: Any = self
        # Changelog partitions are positioned by table recovery itself.
        changelogs = frozenset(thread.app.tables.changelog_topics)
        committed: dict[TopicPartition, int | None] = await thread.call_thread(
            seek_to_committed_or_beginning, thread._ensure_consumer(), changelogs, self.seek_ledger
        )
        return committed

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: set[Any] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> StampedRecords:
        if active_partitions is not None and not active_partitions:
            # Paused by a rebalance since the fetch was asked for: aiokafka would drain *every*
            # partition for an empty set, and Faust would throw the records away.
            return StampedRecords({}, self.seek_ledger.epoch)
        base: Any = super()
        records = await base._fetch_records(consumer, active_partitions, timeout, max_records)
        # Stamped in the step that drained them: a seek either came before or comes after.
        return StampedRecords(records, self.seek_ledger.epoch)


class _HandsOnNothingFetchedBeforeASeek:
    """Mixin for a Faust aiokafka consumer (see the module's docstring, rule 2).

    Seeks are applied to Faust's read offsets by the fetcher's own task, between two fetches:
    applied from the recovery task, a record of a batch fetched before the seek and still being
    handed on could raise the read offset again.
    """

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        base: Any = super()
        records, active_partitions = await base._wait_next_records(timeout)
        ledger = self._seek_ledger()
        self._apply_seeks(ledger.unapplied())
        if records:
            records = drop_records_fetched_before_a_seek(records, ledger)
        return records, active_partitions

    async def perform_seek(self) -> None:
        consumer: Any = self
        committed = await consumer.seek_to_committed()
        # Faust's bookkeeping, but the read offsets of the partitions the seek moved: those the
        # fetcher's task sets (``_wait_next_records``).
        moved = self._seek_ledger().seeks
        consumer._read_offset.update(
            {
                tp: offset if offset is not None and offset >= 0 else None
                for tp, offset in committed.items()
                if tp not in moved
            }
        )
        consumer._committed_offset.update(
            {tp: offset or None for tp, offset in committed.items() if offset is not None}
        )

    async def read_again(self, positions: Mapping[Any, int | None]) -> None:
        """Seek partitions back to ``positions`` (rule 3); fetches made before are dropped and
        read offsets reset by ``_wait_next_records``, as after any seek."""
        thread: Any = self._thread  # type: ignore[attr-defined]
        await thread.call_thread(
            seek_positions, thread._ensure_consumer(), positions, self._seek_ledger()
        )

    def _apply_seeks(self, seeks: Iterable[tuple[Any, int]]) -> None:
        consumer: Any = self
        for tp, offset in seeks:
            # Records from ``offset`` on come again and must pass; gaps noted before the seek
            # would count records never handed on as done.
            consumer._read_offset[tp] = offset if offset else None
            consumer._gap.pop(tp, None)

    def _seek_ledger(self) -> SeekLedger:
        consumer: Any = self
        ledger: SeekLedger = consumer._thread.seek_ledger
        return ledger


class _HoldsTheCommitAtAHole:
    """Mixin for a Faust consumer (rule 3): a jump in the offsets handed on holds the commit back.

    Faust takes a jump for offsets without a record (transaction markers, compaction) and commits
    over it. The stages' topics have a record at every offset (no transactions; facts and partials
    are never compacted), so a jump is records lost between the fetch and the agent: committed
    over, they were lost for good; held back, the partition stops moving and ``watch_commits``
    reads it again. Records deleted by retention are the exception ``watch_commits`` lets pass.
    """

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        return None

    def commit_floor(self, tp: Any) -> int | None:
        """The first offset of ``tp`` not yet committed: its commit, or else where it was sought
        to start (its beginning, rule 1); None when neither is known."""
        consumer: Any = self
        committed: int | None = consumer._committed_offset.get(tp)
        if committed is not None:
            return committed
        seek = consumer._thread.seek_ledger.seeks.get(tp)
        return None if seek is None else int(seek[1])

    def _new_offset(self, tp: Any) -> int | None:
        consumer: Any = self
        # Faust lets the first acked offset be one above the commit (the next offset to read), and
        # commits anything before a first commit: records missing there were committed over too.
        floor = self.commit_floor(tp)
        acked = consumer._acked.get(tp)
        if floor is not None and acked and min(acked) > floor:
            return None
        base: Any = super()
        new: int | None = base._new_offset(tp)
        return new


def install(app: Any) -> None:
    """Give a ``faust.App``'s consumer (Faust's or the embedded broker's) the three rules; the
    timer of rule 3 is ``watch_commits``."""
    consumer_class = app.transport.Consumer
    base_thread = getattr(consumer_class, "thread_class", faust_aiokafka.AIOKafkaConsumerThread)
    thread_class = type(base_thread.__name__, (_SeeksToCommittedOrBeginning, base_thread), {})

    def _new_consumer_thread(self: Any) -> Any:
        return thread_class(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = type(
        consumer_class.__name__,
        (_HoldsTheCommitAtAHole, _HandsOnNothingFetchedBeforeASeek, consumer_class),
        {"thread_class": thread_class, "_new_consumer_thread": _new_consumer_thread},
    )
