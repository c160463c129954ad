"""What ``cci bench`` feeds the pipeline: a data set cut to N events, and latency-phase events.

The data set is ``streams.dev.generate``'s realistic traffic (segments, resends, late records, plan
upgrades…): enough users are generated for N events, and each input's delivery-ordered list is cut
to its share of N, so the mix of activity and tickets stays the generator's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS

# Users generated beyond the estimate, so that the cut, not the population, decides N.
USER_HEADROOM = 1.05
LATENCY_PREFIX = "bench-latency"


def users_for_events(events: int, sample_users: int, sample_events: int) -> int:
    """Users to generate for at least ``events`` events, from a sample's events per user."""
    if sample_users < 1 or sample_events < 1:
        raise ValueError("the sample must have users and events")
    return max(1, math.ceil(events * sample_users / sample_events * USER_HEADROOM))


def cut_to(
    activity: list[bytes], tickets: list[bytes], events: int
) -> tuple[list[bytes], list[bytes]]:
    """The first ``events`` records of both inputs together, each input keeping its share.

    ValueError when the inputs hold fewer records than that.
    """
    available = len(activity) + len(tickets)
    if available < events:
        raise ValueError(f"only {available} events to cut {events} from")
    ticket_count = round(events * len(tickets) / available)
    return activity[: events - ticket_count], tickets[:ticket_count]


@dataclass(frozen=True)
class LatencyEvent:
    """One event of the latency phase: each raises one counter of its month's global figure by
    exactly one (a new active user, or a new ticket)."""

    topic: str
    key: bytes
    value: bytes

    @property
    def is_ticket(self) -> bool:
        return self.topic == TOPIC_TICKETS


def latency_events(
    count: int, ticket_share: float, moment: datetime, activity: str = "login"
) -> list[LatencyEvent]:
    """``count`` events at event time ``moment``, tickets spread evenly at ``ticket_share``.

    Every event has a user of its own that no other event has, so an activity is always a new
    active user of the month and a ticket always a new ticket; neither has a profile.
    """
    if not 0 <= ticket_share <= 1:
        raise ValueError(f"ticket share must be within [0, 1], got {ticket_share}")
    stamp = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    events = []
    for index in range(count):
        user = f"{LATENCY_PREFIX}-user-{index:09d}"
        # Bresenham's spacing: a ticket whenever the running share passes a whole number.
        if math.floor((index + 1) * ticket_share) > math.floor(index * ticket_share):
            record = {
                "ticket_id": f"{LATENCY_PREFIX}-ticket-{index:09d}",
                "user_id": user,
                "created_at": stamp,
                "channel": "web",
            }
            topic = TOPIC_TICKETS
        else:
            record = {"user_id": user, "occurred_at": stamp, "activity": activity}
            topic = TOPIC_ACTIVITY
        events.append(LatencyEvent(topic, user.encode(), orjson.dumps(record)))
    return events


def due_events(rate: float, elapsed_s: float, total: int) -> int:
    """Events that should have been produced ``elapsed_s`` into a phase offered at ``rate``/s."""
    return min(total, math.floor(rate * max(elapsed_s, 0.0)))
