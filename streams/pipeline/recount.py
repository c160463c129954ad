"""The reference batch recount: raw input records → the exact figures the stream must converge to.

It reuses the stream's validation and enrichment (one definition of what an event means) but does
the deduplication and counting with plain dictionaries, independently of ``deduplicate.py`` and
``aggregate.py``, so that a bug there shows up as a difference rather than being copied here.

Profiles are loaded completely before any event is enriched, as the worker does at start-up.
Figures exist only for segments that hold a winning fact: a stream that once counted a segment and
later moved its only fact elsewhere publishes that segment with zero counts, which a comparison
should treat as equal to an absent row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from streams import domain
from streams.pipeline.emit import figure_fields
from streams.pipeline.enrich import Attributes, Enricher, Profile, newer_profile, profile_from_event
from streams.pipeline.partitioning import partition_for
from streams.pipeline.validate import InvalidEvent, parse_activity, parse_profile, parse_ticket
from streams.settings import Settings

Fact = TypeVar("Fact")

SegmentKey = tuple[str, str]  # (dimension, segment)
FigureKey = tuple[str, str, str]  # (month label, dimension, segment)
Figure = tuple[int, int]  # (tickets, active_users)


@dataclass
class Recount:
    """Everything a recount finds in the input."""

    figures: dict[FigureKey, Figure]
    # Activity and ticket records the stream sends to cci-dead-letters, per reason.
    dead_letters: Counter[str] = field(default_factory=Counter)
    # Profiles the stream logs and skips (they never reach the dead-letter topic), per reason.
    invalid_profiles: Counter[str] = field(default_factory=Counter)
    # Valid activities whose type does not make a user active (CCI_ACTIVE_ACTIVITIES).
    inactive_activities: int = 0
    active_user_months: int = 0
    distinct_tickets: int = 0


def load_profiles(
    records: Iterable[bytes], settings: Settings, invalid: Counter[str] | None = None
) -> dict[str, Profile]:
    """user_id → newest valid profile; invalid records are counted in ``invalid`` and skipped."""
    zone = settings.zone
    profiles: dict[str, Profile] = {}
    for raw in records:
        try:
            event = parse_profile(raw, settings.max_event_bytes, settings.max_segment_chars)
        except InvalidEvent as error:
            if invalid is not None:
                invalid[error.reason] += 1
            continue
        profiles[event.user_id] = newer_profile(
            profiles.get(event.user_id), profile_from_event(event, zone)
        )
    return profiles


def _valid(
    raws: Iterable[bytes], fact_of: Callable[[bytes], Fact], dead_letters: Counter[str]
) -> Iterator[Fact]:
    """The fact of each raw event; an invalid one is counted by reason (ingest dead-letters it)."""
    for raw in raws:
        try:
            fact = fact_of(raw)
        except InvalidEvent as error:
            dead_letters[error.reason] += 1
            continue
        yield fact


def recount(
    activity: Iterable[bytes],
    tickets: Iterable[bytes],
    profiles: Iterable[bytes],
    now: datetime,
    settings: Settings,
) -> Recount:
    """The exact figures of every month with an active user or a ticket, as of ``now``."""
    invalid_profiles: Counter[str] = Counter()
    profile_book = load_profiles(profiles, settings, invalid_profiles)
    dimensions = domain.user_dimensions(settings.extra_dimensions)
    enricher = Enricher.from_settings(settings, profile_book.get)
    dead_letters: Counter[str] = Counter()
    inactive = 0

    # (user_id, month) → the winning (ts, attributes) of that user-month.
    active_winners: dict[tuple[str, int], tuple[int, Attributes]] = {}
    max_bytes, max_chars = settings.max_event_bytes, settings.max_segment_chars
    for active in _valid(
        activity,
        lambda raw: enricher.active_fact(parse_activity(raw, max_bytes, max_chars), now),
        dead_letters,
    ):
        if active is None:
            inactive += 1
            continue
        key = (active.user_id, active.month)
        candidate = (active.ts, active.attributes)
        held = active_winners.get(key)
        if held is None or candidate < held:
            active_winners[key] = candidate

    # ticket_id → the winning (ts, attributes, month); month follows from ts, so comparing the
    # whole tuple is comparing (ts, attributes).
    ticket_winners: dict[str, tuple[int, Attributes, int]] = {}
    for ticket in _valid(
        tickets,
        lambda raw: enricher.ticket_fact(parse_ticket(raw, max_bytes, max_chars), now),
        dead_letters,
    ):
        version = (ticket.ts, ticket.attributes, ticket.month)
        held_ticket = ticket_winners.get(ticket.ticket_id)
        if held_ticket is None or version[:2] < held_ticket[:2]:
            ticket_winners[ticket.ticket_id] = version

    # Counted per facts partition (the partition a fact is published to), where the
    # cardinality guard applies, then summed: the stream's rule, computed independently.
    by_partition: dict[tuple[int, int], tuple[Counter[SegmentKey], Counter[SegmentKey]]] = (
        defaultdict(lambda: (Counter(), Counter()))
    )
    partitions = settings.partitions
    for (user_id, month), (_ts, attributes) in active_winners.items():
        counts = by_partition[(partition_for(user_id, partitions), month)][0]
        counts.update(domain.segment_keys(dimensions, attributes))
    ticket_dimensions = (*dimensions, domain.CHANNEL)
    for ticket_id, (_ts, attributes, month) in ticket_winners.items():
        counts = by_partition[(partition_for(ticket_id, partitions), month)][1]
        counts.update(domain.segment_keys(ticket_dimensions, attributes))
    active_counts: dict[int, Counter[SegmentKey]] = defaultdict(Counter)
    ticket_counts: dict[int, Counter[SegmentKey]] = defaultdict(Counter)
    for (_partition, month), (actives, tickets) in by_partition.items():
        folded = guarded(actives, tickets, settings.max_segment_values)
        active_counts[month].update(fold(actives, folded))
        ticket_counts[month].update(fold(tickets, folded))

    return Recount(
        figures=_figures(active_counts, ticket_counts),
        dead_letters=dead_letters,
        invalid_profiles=invalid_profiles,
        inactive_activities=inactive,
        active_user_months=len(active_winners),
        distinct_tickets=len(ticket_winners),
    )


def guarded(
    actives: Counter[SegmentKey], tickets: Counter[SegmentKey], max_values: int
) -> dict[str, frozenset[str]]:
    """dimension → the values named by the cardinality guard, for the dimensions it folds."""
    values: dict[str, set[str]] = defaultdict(set)
    for dimension, segment in (*actives, *tickets):
        values[dimension].add(segment)
    folded = {}
    for dimension, segments in values.items():
        named = domain.named_values(segments, max_values)
        if named is not None and dimension != domain.ALL:
            folded[dimension] = named
    return folded


def fold(counts: Counter[SegmentKey], folded: Mapping[str, frozenset[str]]) -> Counter[SegmentKey]:
    """``counts`` with the values the guard does not name counted as ``other``."""
    result: Counter[SegmentKey] = Counter()
    for (dimension, segment), count in counts.items():
        named = folded.get(dimension)
        if named is not None and segment not in named:
            segment = domain.OTHER
        result[(dimension, segment)] += count
    return result


def _figures(
    active_counts: Mapping[int, Counter[tuple[str, str]]],
    ticket_counts: Mapping[int, Counter[tuple[str, str]]],
) -> dict[FigureKey, Figure]:
    figures: dict[FigureKey, Figure] = {}
    global_key = (domain.ALL, domain.ALL)
    for month in sorted(set(active_counts) | set(ticket_counts)):
        actives = active_counts.get(month, Counter())
        tickets = ticket_counts.get(month, Counter())
        label = domain.month_label(month)
        for dimension, segment in set(actives) | set(tickets) | {global_key}:
            # A channel splits tickets only: its denominator is everyone active that month.
            users = (
                actives[global_key]
                if dimension == domain.CHANNEL
                else actives[(dimension, segment)]
            )
            figures[(label, dimension, segment)] = (tickets[(dimension, segment)], users)
    return figures


def expected_updates(figures: Mapping[FigureKey, Figure]) -> list[dict[str, Any]]:
    """The cci-updates values the figures stand for (without version and emitted_at), sorted."""
    return [
        figure_fields(month, dimension, segment, tickets, active_users)
        for (month, dimension, segment), (tickets, active_users) in sorted(figures.items())
    ]
