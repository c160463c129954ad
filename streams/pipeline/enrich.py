"""Stage 2 of the dataflow: a valid event + the user's profile → a *fact* to deduplicate.

A fact is what the rest of the pipeline needs of an event, and nothing more:

* ``ActiveFact`` — user ``user_id`` was active in ``month``, with that event's segment attributes;
* ``TicketFact`` — ticket ``ticket_id`` was created in ``month``, with its attributes, channel last.

``ts`` (event time, µs since the epoch) decides which of several versions of the same user-month
or ticket wins: the earliest, ties broken by the smaller attribute tuple. That rule is independent
of arrival order, so replays and rebalances cannot change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import msgspec
import orjson

from streams import domain
from streams.domain import (
    DAY_MICROS,
    EPOCH,
    MICROSECOND,
    epoch_micros,
    month_of_micros,
    month_start_micros,
)
from streams.pipeline.validate import (
    FUTURE_TIMESTAMP,
    TOO_LATE,
    ActivityEvent,
    InvalidEvent,
    TicketEvent,
    UserProfile,
    new_tuple,
)
from streams.settings import Settings

Attributes = tuple[str, ...]


class ActiveFact(NamedTuple):
    user_id: str
    month: int
    ts: int
    attributes: Attributes


class TicketFact(NamedTuple):
    ticket_id: str
    month: int
    ts: int
    attributes: Attributes  # user dimensions' values, then the channel
    user_id: str = ""  # who filed it: carried to the analysts' ticket table


@dataclass(frozen=True, slots=True)
class Profile:
    """What enrichment needs of a user profile."""

    signup_month: int
    segments: Mapping[str, str]
    updated_at: int  # µs; the newest profile of a user wins
    # The Enricher's cache of what this profile gives (``Enricher._attributes``): held here, not
    # in a dict by user, so an event costs one look-up of its user, and a newer profile of the
    # user starts without it. Not part of the profile's value.
    held: Any = field(default=None, compare=False, repr=False)


def profile_from_event(event: UserProfile, zone: ZoneInfo) -> Profile:
    return Profile(
        signup_month=domain.month_of(event.signup_at, zone),
        segments=event.segments,
        updated_at=epoch_micros(event.updated_at),
    )


def newer_profile(current: Profile | None, candidate: Profile) -> Profile:
    """Keep the profile with the latest ``updated_at``, whatever order they arrive in.

    Two profiles with the same ``updated_at`` are decided by their content, not their arrival.
    """
    if current is None:
        return candidate
    return max(current, candidate, key=_profile_order)


def _profile_order(profile: Profile) -> tuple[int, int, list[tuple[str, str]]]:
    return profile.updated_at, profile.signup_month, sorted(profile.segments.items())


@dataclass(frozen=True)
class Enricher:
    """Turns valid events into facts; raises InvalidEvent for events outside the kept months."""

    zone: ZoneInfo
    dimensions: tuple[str, ...]
    active_activities: frozenset[str]
    retain_months: int
    max_future_micros: int
    profile_of: Callable[[str], Profile | None]
    # [now, (latest ts accepted, oldest retained month, earliest ts that may be kept)] of the last
    # ``now`` given: a batch gives one, so the bounds are computed once per batch (an identity
    # test per event, no hashing).
    _bounds: list[Any] = field(
        default_factory=lambda: [None, (0, 0, 0)], init=False, compare=False, repr=False
    )

    @classmethod
    def from_settings(
        cls, settings: Settings, profile_of: Callable[[str], Profile | None]
    ) -> Enricher:
        return cls(
            zone=settings.zone,
            dimensions=domain.user_dimensions(settings.extra_dimensions),
            active_activities=frozenset(settings.active_activities),
            retain_months=settings.retain_months,
            max_future_micros=int(settings.max_future_seconds * 1_000_000),
            profile_of=profile_of,
        )

    def counts_as_active(self, activity: str | None) -> bool:
        return not self.active_activities or activity in self.active_activities

    def _month(self, moment: datetime, now: datetime) -> tuple[int, int]:
        ts = (moment - EPOCH) // MICROSECOND  # epoch_micros, inline: this runs once per event
        bounds = self._bounds
        if now is not bounds[0]:
            oldest = domain.oldest_retained_month(now, self.zone, self.retain_months)
            bounds[:] = [
                now,
                (
                    epoch_micros(now) + self.max_future_micros,
                    oldest,
                    # A day before the oldest month's first UTC day: any time before is too late.
                    month_start_micros(oldest) - DAY_MICROS,
                ),
            ]
        latest, oldest, kept_from = bounds[1]
        if ts > latest:
            raise InvalidEvent(FUTURE_TIMESTAMP, f"{moment.isoformat()} is in the future")
        # Too-late times take the plain conversion: month_of_micros's cache per day then holds
        # only the days of the kept months, whatever days the input names.
        month = (
            month_of_micros(ts, self.zone)
            if ts >= kept_from
            else domain.month_of(moment, self.zone)
        )
        if month < oldest:
            raise InvalidEvent(
                TOO_LATE,
                f"month {domain.month_label(month)} is older than the {self.retain_months} "
                f"months kept (oldest {domain.month_label(oldest)})",
            )
        return month, ts

    def _attributes(
        self, user_id: str, segments: Mapping[str, str] | None, month: int
    ) -> Attributes:
        profile = self.profile_of(user_id)
        if not segments and profile is not None and self.dimensions[-1] == domain.TENURE:
            # Events without segments of their own (most) take the profile's values whole; held
            # on the profile: (dimensions, the values before tenure, the month and attributes of
            # the user's last event), so one in the same month takes the same attributes.
            held = profile.held
            if held is not None and held[0] is self.dimensions:
                if held[2] == month:
                    return held[3]
                values = held[1]
            else:
                values = domain.user_attributes(
                    self.dimensions[:-1], None, profile.segments, None, month
                )
            attributes = (*values, domain.tenure_bucket(profile.signup_month, month))
            # A cache, not the profile's value (compare=False): set through the frozen class.
            object.__setattr__(profile, "held", (self.dimensions, values, month, attributes))
            return attributes
        return domain.user_attributes(
            self.dimensions,
            segments,
            profile.segments if profile else None,
            profile.signup_month if profile else None,
            month,
        )

    def active_fact(self, event: ActivityEvent, now: datetime) -> ActiveFact | None:
        """None when the activity's type does not make a user active."""
        if self.active_activities and event.activity not in self.active_activities:
            return None  # counts_as_active, inline
        month, ts = self._month(event.occurred_at, now)
        attributes = self._attributes(event.user_id, event.segments, month)
        return new_tuple(ActiveFact, (event.user_id, month, ts, attributes))

    def ticket_fact(self, event: TicketEvent, now: datetime) -> TicketFact:
        month, ts = self._month(event.created_at, now)
        attributes = self._attributes(event.user_id, event.segments, month)
        return new_tuple(
            TicketFact,
            (
                event.ticket_id,
                month,
                ts,
                (*attributes, event.channel or domain.UNKNOWN),
                event.user_id,
            ),
        )


# --- wire format of the facts topic (enrich → deduplicate) -------------------------------------
# One record carries a batch of facts for one partition: FACTS_FORMAT, then msgpack of
# ([ActiveFact...], [TicketFact...]), each fact an array (named tuples encode as arrays), which
# msgspec decodes straight into the named tuples, in C. Records written before this format are
# JSON arrays of ["a"|"t", id, month, ts, [attributes](, user)]: a worker restarted on new code
# still reads them from the topic (``decode_facts_record``).

FACTS_FORMAT = b"\x01"  # the first byte of a msgpack facts record; a JSON one starts with "["
_FACTS_ENCODER = msgspec.msgpack.Encoder()
_FACTS_DECODER = msgspec.msgpack.Decoder(tuple[list[ActiveFact], list[TicketFact]])


def encode_facts(facts: Sequence[ActiveFact | TicketFact]) -> bytes:
    """One facts record of ``facts``, the active ones first (the order of facts does not matter
    to deduplicate); ``records.split_to_fit`` keeps records under the size limit."""
    actives = [fact for fact in facts if type(fact) is ActiveFact]
    tickets = [fact for fact in facts if type(fact) is not ActiveFact]
    return FACTS_FORMAT + _FACTS_ENCODER.encode((actives, tickets))


def decode_facts_record(value: bytes) -> list[ActiveFact | TicketFact]:
    """The facts of a facts record, in either format; ValueError for anything else."""
    if value[:1] == FACTS_FORMAT:
        actives, tickets = _FACTS_DECODER.decode(memoryview(value)[1:])
        return [*actives, *tickets]
    if value[:1] == b"[":
        return decode_facts(orjson.loads(value))
    raise ValueError(f"not a facts record (first byte {value[:1]!r})")


def encode_fact(fact: ActiveFact | TicketFact) -> list[object]:
    """A fact in the JSON format of before ``FACTS_FORMAT`` (for the tests of reading it)."""
    if isinstance(fact, ActiveFact):
        return ["a", fact.user_id, fact.month, fact.ts, fact.attributes]
    return ["t", fact.ticket_id, fact.month, fact.ts, fact.attributes, fact.user_id]


def decode_facts(rows: list[list[Any]]) -> list[ActiveFact | TicketFact]:
    """The facts of a JSON facts record (the format before ``FACTS_FORMAT``), parsed."""
    return [
        ActiveFact(key, month, ts, tuple(attributes))
        if kind == "a"
        else TicketFact(key, month, ts, tuple(attributes), *user)
        for kind, key, month, ts, attributes, *user in rows
    ]
