"""The CCI job's deduplication and counting steps as every peer of ``cci bench`` runs them: pure
rules over a key-value state, no stream framework imported (each peer supplies its own state).

* A user-month, and a ticket, keeps its winning version (earliest event time, ties by the
  smaller attribute tuple: the pipeline's rule) and emits a delta (+1 for the new winner's
  segments, -1 for the one it replaces) only when the winner changes.
* A month keeps one counter per (dimension, segment) and reports the absolute figures a batch of
  deltas changed, as ``[dimension, segment, tickets, active_users]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from streams import domain
from streams.pipeline.enrich import Attributes, Profile, newer_profile, profile_from_event
from streams.pipeline.validate import InvalidEvent, parse_profile
from streams.settings import Settings

GLOBAL_KEY = f"{domain.ALL}|{domain.ALL}"
CHANNEL_PREFIX = f"{domain.CHANNEL}|"
CHANNELS_KEY = "#channels"  # the month's channel segments: republished when the global count moves
ACTIVE, TICKET = "a", "t"

Delta = list[Any]  # [attributes, +1 | -1]
SEPARATOR = "\x00"  # in version_order: sorts below every character an attribute holds


# --- pure rules ----------------------------------------------------------------------------------


def _wins(ts: int, attributes: list[str], held: list[Any] | None) -> bool:
    """Earliest version wins, ties broken by the smaller attribute tuple (the pipeline's rule)."""
    return held is None or (ts, attributes) < (held[0], held[1])


def user_month_change(
    held: list[Any] | None, ts: int, attributes: Attributes
) -> tuple[list[Any] | None, list[Delta]]:
    """A user-month's new state ([ts, attributes]) and count deltas, given one of its versions.

    (None, []) when the held winner stays.
    """
    candidate = list(attributes)
    if not _wins(ts, candidate, held):
        return None, []
    if held is None:
        return [ts, candidate], [[candidate, 1]]
    if held[1] == candidate:
        return [ts, candidate], []  # earlier, with the same segments: the counts stay
    return [ts, candidate], [[held[1], -1], [candidate, 1]]


def ticket_change(
    held: list[Any] | None, ts: int, attributes: Attributes, month: str
) -> tuple[list[Any] | None, list[tuple[str, list[Delta]]]]:
    """A ticket's new state ([ts, attributes, month]) and count deltas per month.

    (None, []) when the held winner stays. An earlier version may fall in another month: the
    ticket then leaves the month it was counted in.
    """
    candidate = list(attributes)
    if not _wins(ts, candidate, held):
        return None, []
    winner = [ts, candidate, month]
    if held is None:
        return winner, [(month, [[candidate, 1]])]
    if held[2] != month:
        return winner, [(held[2], [[held[1], -1]]), (month, [[candidate, 1]])]
    if held[1] == candidate:
        return winner, []
    return winner, [(month, [[held[1], -1], [candidate, 1]])]


def segment_keys(dimensions: tuple[str, ...], attributes: Iterable[str]) -> list[str]:
    return [f"{d}|{s}" for d, s in domain.segment_keys(dimensions, tuple(attributes))]


class MonthCounts:
    """The count step of one month over a key-value state (Quix's, or a dict in tests)."""

    def __init__(
        self,
        get: Callable[[str], Any],
        set_: Callable[[str, Any], None],
        user_dimensions: tuple[str, ...],
    ) -> None:
        self.get = get
        self.set = set_
        self.user_dimensions = user_dimensions
        self.ticket_dimensions = (*user_dimensions, domain.CHANNEL)

    def apply(self, kind: str, deltas: list[Delta]) -> list[list[Any]]:
        """Apply a dedup step's deltas; the figures they change as [dimension, segment, t, u]."""
        column = 0 if kind == TICKET else 1
        dimensions = self.ticket_dimensions if kind == TICKET else self.user_dimensions
        counts: dict[str, list[int]] = {}
        for attributes, sign in deltas:
            for key in segment_keys(dimensions, attributes):
                held = counts.get(key) or self.get(key) or [0, 0]
                held[column] += sign
                counts[key] = held
        for key, held in counts.items():
            self.set(key, held)
        touched = set(counts)
        channels: list[str] = self.get(CHANNELS_KEY) or []
        if kind == TICKET:
            new = [k for k in touched if k.startswith(CHANNEL_PREFIX) and k not in channels]
            if new:
                channels = sorted({*channels, *new})
                self.set(CHANNELS_KEY, channels)
        elif GLOBAL_KEY in touched:
            touched.update(channels)  # every channel's denominator is the global count
        global_users = (counts.get(GLOBAL_KEY) or self.get(GLOBAL_KEY) or [0, 0])[1]
        figures = []
        for key in sorted(touched):
            tickets, users = counts.get(key) or self.get(key) or [0, 0]
            if key.startswith(CHANNEL_PREFIX):
                # As the batch recount: a channel exists while it has tickets.
                users = global_users if tickets else 0
            dimension, _, segment = key.partition("|")
            figures.append([dimension, segment, tickets, users])
        return figures


def fold_profile(
    profiles: dict[str, Profile], key: bytes | None, value: bytes | None, settings: Settings
) -> dict[str, Profile]:
    """``profiles`` with one profile record applied as the worker's profile book applies it: the
    newest valid version of a user's profile wins, a tombstone deletes it, invalid records are
    ignored."""
    if value is None:
        if key is not None:
            profiles.pop(key.decode("utf-8", "replace"), None)
        return profiles
    try:
        event = parse_profile(value, settings.max_event_bytes)
    except InvalidEvent:
        return profiles
    profile = profile_from_event(event, settings.zone)
    profiles[event.user_id] = newer_profile(profiles.get(event.user_id), profile)
    return profiles


# --- for a table engine (Pathway): a version as one sortable string, a month's rows as figures ---


def version_order(ts: int, month: str, attributes: tuple[str, ...]) -> str:
    """A string that sorts as (ts, attributes) does: ts is non-negative (epoch µs), the month
    follows from ts, and NUL sorts below every other character. It relies on no attribute holding
    a NUL (none of the generated data does; the pipeline relies on nothing of the kind)."""
    return SEPARATOR.join((f"{ts:020d}", month, *attributes))


def parse_order(order: str) -> tuple[str, tuple[str, ...]]:
    """(month, attributes) of a ``version_order`` string."""
    _, month, *attributes = order.split(SEPARATOR)
    return month, tuple(attributes)


def month_figures(
    month_rows: tuple[tuple[str, str, int, int], ...],
) -> list[list[Any]]:
    """A month's figures from its (dimension, segment, tickets, users) rows: a channel's active
    users are the month's while it has tickets (the batch recount's rule)."""
    global_users = next(
        (users for d, s, _, users in month_rows if (d, s) == (domain.ALL, domain.ALL)), 0
    )
    figures = []
    for dimension, segment, tickets, users in sorted(month_rows):
        if dimension == domain.CHANNEL:
            users = global_users if tickets else 0
        if tickets or users:
            figures.append([dimension, segment, tickets, users])
    return figures
