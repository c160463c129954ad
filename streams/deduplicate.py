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

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from streams import domain
from streams.enrich import ActiveFact, Attributes, TicketFact

SegmentKey = tuple[str, str]  # (dimension, segment)
Fact = ActiveFact | TicketFact


class PartitionState:
    """Dedup state and partial counts of one facts partition. Pure: no Kafka, no Faust."""

    def __init__(self, dimensions: Sequence[str]) -> None:
        self.dimensions = tuple(dimensions)
        self.ticket_dimensions = (*self.dimensions, domain.CHANNEL)
        self.actives: dict[int, dict[str, tuple[int, Attributes]]] = defaultdict(dict)
        # ticket_id → (ts, month, attributes, user_id); the user only breaks exact ties.
        self.tickets: dict[str, tuple[int, int, Attributes, str]] = {}
        self.active_counts: dict[int, Counter[SegmentKey]] = defaultdict(Counter)
        self.ticket_counts: dict[int, Counter[SegmentKey]] = defaultdict(Counter)
        self.dirty: dict[int, set[SegmentKey]] = defaultdict(set)
        self.chunk_keys: dict[int, set[str]] = defaultdict(set)
        # Highest facts offset reflected in this state: published partial counts carry it so the
        # aggregate keeps the newest of two owners' figures after a rebalance.
        self.applied_seq = -1
        # Identical attribute tuples share one object: thousands of users, a few dozen tuples.
        self._interned: dict[Attributes, Attributes] = {}

    # --- applying facts ------------------------------------------------------------------------

    def apply(self, facts: Iterable[Fact], seq: int) -> dict[int, list[Fact]]:
        """Apply facts from the facts message at offset ``seq``; return the winners, per month."""
        changed: dict[int, list[Fact]] = defaultdict(list)
        for fact in facts:
            if self._apply_one(fact):
                changed[fact.month].append(fact)
        self.applied_seq = max(self.applied_seq, seq)
        return changed

    def _apply_one(self, fact: Fact) -> bool:
        attributes = self._interned.setdefault(fact.attributes, fact.attributes)
        if isinstance(fact, ActiveFact):
            users = self.actives[fact.month]
            current = users.get(fact.user_id)
            candidate = (fact.ts, attributes)
            if current is not None and current <= candidate:
                return False
            users[fact.user_id] = candidate
            if current is None or current[1] != attributes:
                counts = self.active_counts[fact.month]
                dirty = self.dirty[fact.month]
                if current is not None:
                    self._count(counts, dirty, self.dimensions, current[1], -1)
                self._count(counts, dirty, self.dimensions, attributes, +1)
            return True
        ticket = (fact.ts, fact.month, attributes, fact.user_id)
        current_ticket = self.tickets.get(fact.ticket_id)
        if current_ticket is not None and current_ticket <= ticket:
            return False
        self.tickets[fact.ticket_id] = ticket
        if current_ticket is not None:
            old_month = current_ticket[1]
            self._count(
                self.ticket_counts[old_month],
                self.dirty[old_month],
                self.ticket_dimensions,
                current_ticket[2],
                -1,
            )
        self._count(
            self.ticket_counts[fact.month],
            self.dirty[fact.month],
            self.ticket_dimensions,
            attributes,
            +1,
        )
        return True

    @staticmethod
    def _count(
        counts: Counter[SegmentKey],
        dirty: set[SegmentKey],
        dimensions: Sequence[str],
        attributes: Attributes,
        delta: int,
    ) -> None:
        for key in domain.segment_keys(dimensions, attributes):
            counts[key] += delta
            dirty.add(key)

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
        value = {
            "seq": seq,
            "a": [
                [f.user_id, f.ts, list(f.attributes)] for f in facts if isinstance(f, ActiveFact)
            ],
            "t": [
                [f.ticket_id, f.ts, list(f.attributes), f.user_id]
                for f in facts
                if isinstance(f, TicketFact)
            ],
        }
        return key, value

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
        months = set(self.actives) | set(self.ticket_counts) | set(self.chunk_keys)
        expired = [m for m in months if m < oldest_month]
        if not expired:
            return []
        for month in expired:
            self.actives.pop(month, None)
            self.active_counts.pop(month, None)
            self.ticket_counts.pop(month, None)
            self.dirty.pop(month, None)
        self.tickets = {k: v for k, v in self.tickets.items() if v[1] >= oldest_month}
        return [key for m in expired for key in self.chunk_keys.pop(m, ())]

    # --- publishing partial counts -------------------------------------------------------------

    def mark_all_dirty(self) -> None:
        """After recovery: republish every figure (a lost publish must not stay lost)."""
        for month in set(self.active_counts) | set(self.ticket_counts):
            self.dirty[month].update(self.active_counts[month])
            self.dirty[month].update(self.ticket_counts[month])

    def drain_dirty(self) -> Iterator[tuple[int, dict[str, list[int]]]]:
        """(month, {"dimension|segment": [tickets, active_users]}) of what changed; clears it.

        Channel segments carry 0 active users: their denominator is the month's global active
        users, which the aggregate takes from ``all|all``.
        """
        dirty, self.dirty = self.dirty, defaultdict(set)
        for month, keys in dirty.items():
            if not keys:
                continue
            tickets = self.ticket_counts[month]
            actives = self.active_counts[month]
            yield (
                month,
                {
                    f"{dimension}|{segment}": [
                        tickets[(dimension, segment)],
                        actives[(dimension, segment)],
                    ]
                    for dimension, segment in keys
                },
            )
            # Drop zero counts so segments that emptied do not linger in memory.
            for key in keys:
                if tickets.get(key) == 0:
                    del tickets[key]
                if actives.get(key) == 0:
                    del actives[key]

    def user_months(self) -> int:
        return sum(len(users) for users in self.actives.values())
