"""Stage 3 of the dataflow: idempotent per-month state of one partition of the facts topic.

Facts are repartitioned so that every version of a user-month (key ``user_id``) and of a ticket
(key ``ticket_id``) lands on one partition. ``PartitionState`` keeps, per partition:

* the winning version of each active user-month and each ticket (earliest ``ts``, then smallest
  attributes: an order-independent rule, so applying a fact twice or out of order changes nothing);
* absolute counts per (month, dimension, segment) derived from them, and which changed since the
  last time they were published.

Changes are written to the changelog as one *chunk* per (month, facts-offset): replaying chunks in
any order through the same rule rebuilds the same state, which is what makes recovery exact.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from streams import domain
from streams.pipeline.enrich import ActiveFact, Attributes, TicketFact
from streams.pipeline.records import MAX_RECORD_BYTES, split_to_fit

SegmentKey = tuple[str, str]  # (dimension, segment)
Fact = ActiveFact | TicketFact

# Packed versions: ts (µs) in the high bits, then (tickets only) the month index, then the id of
# the interned attribute tuple. Higher bits decide first, so comparing ts then attributes works.
ATTRIBUTE_BITS = 24
ATTRIBUTE_MASK = (1 << ATTRIBUTE_BITS) - 1
MONTH_BITS = 20  # month index = year * 12 + month - 1: below 2**20 until year 87,000
MONTH_MASK = (1 << MONTH_BITS) - 1
# A held ticket is one int: its packed version in the low bits (ts ≥ 0: validation rejects times
# before 1970; 2**64 µs is 584,000 years), its user id's UTF-8 bytes above. A (version, user)
# tuple cost 36 bytes more per ticket.
TS_BITS = 64
TICKET_VERSION_BITS = TS_BITS + MONTH_BITS + ATTRIBUTE_BITS
TICKET_VERSION_MASK = (1 << TICKET_VERSION_BITS) - 1


def pack_ticket(version: int, user_id: str) -> int:
    # The 0x01 byte in front keeps a user id's leading NUL bytes.
    return int.from_bytes(b"\x01" + user_id.encode(), "big") << TICKET_VERSION_BITS | version


def ticket_user(held: int) -> str:
    user_number = held >> TICKET_VERSION_BITS
    return user_number.to_bytes((user_number.bit_length() + 7) // 8, "big")[1:].decode()


class Partial(NamedTuple):
    """Partial counts of one month to publish: ``{"dimension|segment": [tickets, actives]}``."""

    month: int
    counts: dict[str, list[int]]
    # The counts are all this partition has for the month: the aggregate replaces what it holds
    # for the partition instead of merging (after recovery: what it holds may be stale).
    reset: bool = False
    # The highest facts offset the counts reflect (``applied_seq`` when they were read): the
    # aggregate keeps the partial with the highest, so it must never claim more than the counts.
    seq: int = -1


class PartitionState:
    """Dedup state and partial counts of one facts partition. Pure: no Kafka, no Faust.

    ``max_segment_values`` is the cardinality guard (``domain.named_values``; 0: none): the
    counts held are exact per value, the published ones fold a dimension's values beyond it into
    ``other``.
    """

    def __init__(self, dimensions: Sequence[str], max_segment_values: int = 0) -> None:
        self.dimensions = tuple(dimensions)
        self.max_segment_values = max_segment_values
        # month → dimension → values published by name while the guard folds that dimension.
        self._guarded: dict[int, dict[str, frozenset[str]]] = defaultdict(dict)
        # (month, dimension, distinct values) the guard started folding since last taken.
        self.guard_started: list[tuple[int, str, int]] = []
        self._resets: set[int] = set()  # months whose next partial replaces the aggregate's
        self.ticket_dimensions = (*self.dimensions, domain.CHANNEL)
        # month → user_id → packed (ts, attributes id): one int per user-month keeps the state
        # near 100 bytes per user-month (see ``pack``).
        self.actives: dict[int, dict[str, int]] = defaultdict(dict)
        # ticket_id → packed (ts, month, attributes id) and user (``pack_ticket``); the user only
        # breaks ties.
        self.tickets: dict[str, int] = {}
        # Counts per (month, dimension, segment) lag behind the winners: a fact changes one count
        # per attribute tuple (month → attributes id → change), and those changes reach the
        # segments (five or more counts per fact) only when the counts are read.
        self._active_changes: dict[int, dict[int, int]] = defaultdict(dict)
        self._ticket_changes: dict[int, dict[int, int]] = defaultdict(dict)
        self._active_counts: dict[int, Counter[SegmentKey]] = defaultdict(Counter)
        self._ticket_counts: dict[int, Counter[SegmentKey]] = defaultdict(Counter)
        self._dirty: dict[int, set[SegmentKey]] = defaultdict(set)
        self.chunk_keys: dict[int, set[str]] = defaultdict(set)
        # Highest facts offset reflected in this state: published partial counts carry it so the
        # aggregate keeps the newest of two owners' figures after a rebalance.
        self.applied_seq = -1
        # Identical attribute tuples are stored once and referred to by number: thousands of
        # users, a few dozen tuples.
        self._attribute_ids: dict[Attributes, int] = {}
        self._attributes: list[Attributes] = []

    # --- applying facts ------------------------------------------------------------------------

    def apply(self, facts: Iterable[Fact], seq: int) -> dict[int, list[Fact]]:
        """Apply facts from the facts message at offset ``seq``; return the winners, per month."""
        changed: dict[int, list[Fact]] = defaultdict(list)
        # The active path is inline, its lookups bound once per record: most facts are activity
        # repeats, which end after the first comparison (a method call per fact cost ~20%).
        actives = self.actives
        attribute_ids = self._attribute_ids
        attribute_id_of = self._attribute_id
        intern = sys.intern
        users: dict[str, int] = {}
        users_month = -1
        for fact in facts:
            if type(fact) is not ActiveFact:
                if self._apply_ticket(fact):  # type: ignore[arg-type]
                    changed[fact.month].append(fact)
                continue
            user_id, month, ts, attributes = fact
            attribute_id = attribute_ids.get(attributes)
            if attribute_id is None:
                attribute_id = attribute_id_of(attributes)
            if month != users_month:
                users, users_month = actives[month], month
            current = users.get(user_id)
            candidate = ts << ATTRIBUTE_BITS | attribute_id
            if current is not None:
                # A later time loses at once; only a tie on time compares the attributes.
                current_ts = current >> ATTRIBUTE_BITS
                if ts > current_ts or (
                    ts == current_ts and not self._earlier(candidate, current, ts)
                ):
                    continue
            # One string per user across months, not one per user-month.
            users[intern(user_id)] = candidate
            current_id = None if current is None else current & ATTRIBUTE_MASK
            if current_id != attribute_id:
                changes = self._active_changes[month]
                if current_id is not None:
                    changes[current_id] = changes.get(current_id, 0) - 1
                changes[attribute_id] = changes.get(attribute_id, 0) + 1
            changed[month].append(fact)
        self.applied_seq = max(self.applied_seq, seq)
        return changed

    def _apply_ticket(self, fact: TicketFact) -> bool:
        attribute_id = self._attribute_id(fact.attributes)
        packed = (fact.ts << MONTH_BITS | fact.month) << ATTRIBUTE_BITS | attribute_id
        current_ticket = self.tickets.get(fact.ticket_id)
        if current_ticket is not None:
            held = current_ticket & TICKET_VERSION_MASK
            if held == packed:
                if ticket_user(current_ticket) <= fact.user_id:
                    return False
            elif not self._earlier(packed, held, fact.ts, shift=MONTH_BITS + ATTRIBUTE_BITS):
                return False
        self.tickets[fact.ticket_id] = pack_ticket(packed, fact.user_id)
        if current_ticket is not None:
            held = current_ticket & TICKET_VERSION_MASK
            old_changes = self._ticket_changes[(held >> ATTRIBUTE_BITS) & MONTH_MASK]
            held_id = held & ATTRIBUTE_MASK
            old_changes[held_id] = old_changes.get(held_id, 0) - 1
        changes = self._ticket_changes[fact.month]
        changes[attribute_id] = changes.get(attribute_id, 0) + 1
        return True

    def _attribute_id(self, attributes: Attributes) -> int:
        attribute_id = self._attribute_ids.get(attributes)
        if attribute_id is None:
            attribute_id = self._attribute_ids[attributes] = len(self._attributes)
            if attribute_id > ATTRIBUTE_MASK:
                raise OverflowError(f"more than {ATTRIBUTE_MASK + 1} distinct attribute tuples")
            self._attributes.append(attributes)
        return attribute_id

    def _earlier(self, candidate: int, current: int, candidate_ts: int, shift: int = 0) -> bool:
        """Does ``candidate`` win over ``current``: earlier ts, then the smaller attribute tuple
        (attribute ids are in first-seen order, so ties compare the tuples themselves)."""
        current_ts = current >> (shift or ATTRIBUTE_BITS)
        if candidate_ts != current_ts:
            return candidate_ts < current_ts
        return (
            self._attributes[candidate & ATTRIBUTE_MASK]
            < self._attributes[current & ATTRIBUTE_MASK]
        )

    # --- counts per segment --------------------------------------------------------------------

    def _settle(self) -> None:
        """Carry the pending changes per attribute tuple into the segment counts."""
        for changes_by_month, counts_by_month, dimensions in (
            (self._active_changes, self._active_counts, self.dimensions),
            (self._ticket_changes, self._ticket_counts, self.ticket_dimensions),
        ):
            for month, changes in changes_by_month.items():
                counts = counts_by_month[month]
                dirty = self._dirty[month]
                for attribute_id, change in changes.items():
                    if change:
                        for key in domain.segment_keys(dimensions, self._attributes[attribute_id]):
                            counts[key] += change
                            dirty.add(key)
            changes_by_month.clear()

    @property
    def active_counts(self) -> dict[int, Counter[SegmentKey]]:
        """month → (dimension, segment) → active users (zeros may linger until published)."""
        self._settle()
        return self._active_counts

    @property
    def ticket_counts(self) -> dict[int, Counter[SegmentKey]]:
        """month → (dimension, segment) → tickets; channel segments included."""
        self._settle()
        return self._ticket_counts

    # --- changelog chunks ----------------------------------------------------------------------

    @staticmethod
    def chunk_key(month: int, seq: int) -> str:
        return f"{domain.month_label(month)}@{seq}"

    def encode_chunk(
        self, month: int, seq: int, facts: Sequence[Fact]
    ) -> tuple[str, dict[str, Any]]:
        """Changelog (key, value) for the winners of one facts message in one month."""
        key = self.chunk_key(month, seq)
        self.chunk_keys[month].add(key)
        # One pass; tuples serialise as JSON arrays, so the attributes are not copied.
        actives: list[Any] = []
        tickets: list[Any] = []
        for f in facts:
            if type(f) is ActiveFact:
                actives.append((f.user_id, f.ts, f.attributes))
            else:
                tickets.append((f.ticket_id, f.ts, f.attributes, f.user_id))
        return key, {"seq": seq, "a": actives, "t": tickets}

    def encode_chunks(
        self, month: int, seq: int, facts: Sequence[Fact], limit: int = MAX_RECORD_BYTES
    ) -> list[tuple[str, bytes]]:
        """``encode_chunk`` as JSON records of at most ``limit`` bytes: the winners split over
        keys ``{month}@{seq}``, ``{month}@{seq}+1``, … (recovery needs only the month of a key)."""
        key, value = self.encode_chunk(month, seq, facts)
        encoded = orjson.dumps(value)
        if len(encoded) <= limit:
            return [(key, encoded)]
        self.chunk_keys[month].discard(key)
        bodies = split_to_fit(
            list(facts), lambda part: orjson.dumps(self.encode_chunk(month, seq, part)[1]), limit
        )
        keys = [key, *(f"{key}+{number}" for number in range(1, len(bodies)))]
        self.chunk_keys[month].update(keys)
        return list(zip(keys, bodies, strict=True))

    def apply_chunk(self, key: str, value: dict[str, Any] | None, oldest_month: int) -> None:
        """Recovery: fold one changelog record (tombstones and expired months are skipped)."""
        label, _, _ = key.partition("@")
        month = domain.month_from_label(label)
        if value is None:
            self.chunk_keys.get(month, set()).discard(key)
            return
        if month < oldest_month:
            return
        self.chunk_keys[month].add(key)
        facts: list[Fact] = [ActiveFact(u, month, ts, tuple(a)) for u, ts, a in value["a"]]
        # Rows written before tickets carried their user have no fourth field.
        facts += [TicketFact(t, month, ts, tuple(a), *user) for t, ts, a, *user in value["t"]]
        self.apply(facts, value["seq"])

    # --- retention -----------------------------------------------------------------------------

    def expire(self, oldest_month: int) -> list[str]:
        """Forget months before ``oldest_month``; return their chunk keys, to tombstone."""
        months = {*self.actives, *self._ticket_counts, *self._ticket_changes, *self.chunk_keys}
        expired = [m for m in months if m < oldest_month]
        if not expired:
            return []
        for month in expired:
            self.actives.pop(month, None)
            for by_month in (
                self._active_changes,
                self._ticket_changes,
                self._active_counts,
                self._ticket_counts,
                self._dirty,
                self._guarded,
            ):
                by_month.pop(month, None)
            self._resets.discard(month)
        self.tickets = {
            ticket_id: held
            for ticket_id, held in self.tickets.items()
            if (held >> ATTRIBUTE_BITS) & MONTH_MASK >= oldest_month
        }
        return [key for m in expired for key in self.chunk_keys.pop(m, ())]

    # --- publishing partial counts -------------------------------------------------------------

    def mark_all_dirty(self) -> None:
        """After recovery: republish every figure (a lost publish must not stay lost), each
        month whole, replacing what the aggregate holds of this partition."""
        self._settle()
        for month in set(self._active_counts) | set(self._ticket_counts):
            self._dirty[month].update(self._active_counts[month])
            self._dirty[month].update(self._ticket_counts[month])
            self._resets.add(month)
        self._guarded.clear()

    def drain_dirty(self) -> list[Partial]:
        """Partial counts of what changed, per month, all read at once and stamped with the
        ``applied_seq`` they reflect; clears it. (Read lazily, while facts were still applied
        between two months, a partial claimed facts its counts did not hold yet: after a restart
        its lower-stamped corrections were refused as stale and the figures stayed short.)

        Channel segments carry 0 active users: their denominator is the month's global active
        users, which the aggregate takes from ``all|all``.
        """
        return list(self._drain_dirty())

    def _drain_dirty(self) -> Iterator[Partial]:
        self._settle()
        dirty, self._dirty = self._dirty, defaultdict(set)
        seq = self.applied_seq
        for month, keys in dirty.items():
            if not keys:
                continue
            tickets = self._ticket_counts[month]
            actives = self._active_counts[month]
            counts = {
                f"{dimension}|{segment}": [
                    tickets[(dimension, segment)],
                    actives[(dimension, segment)],
                ]
                for dimension, segment in keys
            }
            if self.max_segment_values and (
                len(tickets) + len(actives) > self.max_segment_values or self._guarded.get(month)
            ):
                self._fold(month, {dimension for dimension, _ in keys}, counts)
            yield Partial(month, counts, month in self._resets, seq)
            self._resets.discard(month)
            # Drop zero counts so segments that emptied do not linger in memory.
            for key in keys:
                if tickets.get(key) == 0:
                    del tickets[key]
                if actives.get(key) == 0:
                    del actives[key]

    def _fold(self, month: int, dimensions: set[str], counts: dict[str, list[int]]) -> None:
        """Apply the cardinality guard to the changed ``dimensions`` of ``counts``: a folded
        dimension is published whole (named values, ``other``, and zeros for values named
        before but no more)."""
        tickets = self._ticket_counts[month]
        actives = self._active_counts[month]
        guarded = self._guarded[month]
        for dimension in dimensions - {domain.ALL}:
            values = {s for (d, s), n in tickets.items() if d == dimension and n}
            values |= {s for (d, s), n in actives.items() if d == dimension and n}
            named = domain.named_values(values, self.max_segment_values)
            before = guarded.get(dimension)
            if named is None and before is None:
                continue  # not folded, then or now: the changed keys are right as they are
            changed = [key for key in counts if key.partition("|")[0] == dimension]
            for key in changed:
                del counts[key]
            shown = values if named is None else named
            for value in shown:
                key = (dimension, value)
                counts[f"{dimension}|{value}"] = [tickets[key], actives[key]]
            if named is not None:
                rest = values - named
                counts[f"{dimension}|{domain.OTHER}"] = [
                    sum(tickets[(dimension, v)] for v in rest),
                    sum(actives[(dimension, v)] for v in rest),
                ]
                if before is None:
                    self.guard_started.append((month, dimension, len(values)))
                guarded[dimension] = named | {domain.OTHER}
            else:
                del guarded[dimension]
            # Zero what was published by name and is not now (setdefault: the bucket and the
            # shown values keep their counts). Before the guard started, that is every value and
            # every changed key (one that dropped to zero is no value any more); while it folds,
            # the values it named.
            if before is None:
                for value in values - shown:
                    counts.setdefault(f"{dimension}|{value}", [0, 0])
                for key in changed:
                    counts.setdefault(key, [0, 0])
            else:
                for value in before - shown:
                    counts.setdefault(f"{dimension}|{value}", [0, 0])

    def winning_versions(
        self,
    ) -> tuple[
        dict[int, dict[str, tuple[int, Attributes]]], dict[str, tuple[int, int, Attributes, str]]
    ]:
        """The packed state unpacked: (month → user → (ts, attributes)), (ticket → (ts, month,
        attributes, user)). For tests and debugging: it copies everything."""
        attributes = self._attributes
        actives = {
            month: {
                user: (packed >> ATTRIBUTE_BITS, attributes[packed & ATTRIBUTE_MASK])
                for user, packed in users.items()
            }
            for month, users in self.actives.items()
            if users
        }
        tickets = {
            ticket_id: (
                (held & TICKET_VERSION_MASK) >> (MONTH_BITS + ATTRIBUTE_BITS),
                (held >> ATTRIBUTE_BITS) & MONTH_MASK,
                attributes[held & ATTRIBUTE_MASK],
                ticket_user(held),
            )
            for ticket_id, held in self.tickets.items()
        }
        return actives, tickets

    def estimated_bytes(self, sample: int = 64) -> int:
        """Memory held by the winners, estimated cheaply: exact table sizes plus the first
        ``sample`` entries' keys and values scaled up. A user id shared by several months is
        counted in each (errs high); counts and chunk keys are left out (errs low). Against
        tracemalloc: 182 estimated, 189 measured bytes per user-month, tickets included."""
        total = sys.getsizeof(self.actives)
        for users in self.actives.values():
            total += sys.getsizeof(users) + len(users) * _entry_bytes(users, sample)
        total += sys.getsizeof(self.tickets) + len(self.tickets) * _entry_bytes(
            self.tickets, sample
        )
        return total

    def user_months(self) -> int:
        return sum(len(users) for users in self.actives.values())


def _entry_bytes(table: dict[str, int], sample: int) -> int:
    """Average size of a key and its (int) value over the first ``sample`` entries."""
    sizes = [
        _allocated(key) + _allocated(value)
        for key, value in itertools.islice(table.items(), sample)
    ]
    return sum(sizes) // len(sizes) if sizes else 0


def _allocated(item: object) -> int:
    """Bytes the allocator gives an object: its size rounded up to 8 (pymalloc's alignment)."""
    return (sys.getsizeof(item) + 7) & ~7
