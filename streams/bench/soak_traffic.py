"""``cci soak``'s simulated months and their traffic (pure: no broker, no worker).

Month ``m``'s simulated "now" is the 28th, 12:00 UTC; every one of the users (the same population
each month) is active once in it and about ``tickets_per_user`` tickets per user are created, event
times on days 2–27 (in month ``m`` whatever ``CCI_TIMEZONE``, and never in the clock's future).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from streams import domain
from streams.dev.generate import PLANS, PRODUCTS, REGIONS

CLOCK_DAY = 28  # the simulated "now" in each month: the 28th, 12:00 UTC
FIRST_EVENT_DAY, LAST_EVENT_DAY = 2, 27  # event times fall on these days (UTC), both included


def month_of_index(start_month: int, index: int) -> int:
    """Simulated month ``index`` (1 = ``start_month``) as a month number (domain.month_of)."""
    return start_month + index - 1


def month_moment(month: int, day: int, hour: int = 0) -> datetime:
    """``day`` of ``month`` at ``hour``:00 UTC."""
    first = domain.month_start(month)
    return datetime(first.year, first.month, day, hour, tzinfo=UTC)


def clock_moment(month: int) -> datetime:
    """The simulated "now" while ``month``'s traffic is produced and processed."""
    return month_moment(month, CLOCK_DAY, 12)


def clock_offset_seconds(target: datetime, real_now: datetime) -> float:
    """What the clock file holds so that real time plus it is ``target``."""
    return (target - real_now).total_seconds()


def expected_user_months(index: int, retain_months: int, users: int) -> int:
    """User-months the dedup state holds after month ``index``: the retention window's."""
    return min(index, retain_months) * users


def user_id(number: int) -> str:
    return f"soak-user-{number:07d}"


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def profile_records(users: int, signup: datetime, seed: int) -> list[bytes]:
    """One profile per user, segments drawn with the generator's weights."""
    rng = random.Random(seed)

    def pick(pairs: Sequence[tuple[str, float]]) -> str:
        return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]

    stamp = _timestamp(signup)
    return [
        orjson.dumps(
            {
                "user_id": user_id(n),
                "signup_at": stamp,
                "segments": {
                    "plan": pick(PLANS),
                    "product": pick(PRODUCTS),
                    "region": pick(REGIONS),
                },
                "updated_at": stamp,
            }
        )
        for n in range(users)
    ]


@dataclass(frozen=True)
class MonthTraffic:
    activity: list[bytes]
    tickets: list[bytes]

    @property
    def events(self) -> int:
        return len(self.activity) + len(self.tickets)


def month_traffic(
    month: int, users: int, tickets_per_user: float, seed: int, activity_type: str = "login"
) -> MonthTraffic:
    """Every user active once in ``month``; ``round(users × tickets_per_user)`` tickets, each by
    a user drawn at random (ids unique per month). Event times on days 2–27, UTC."""
    rng = random.Random(seed * 1_000_003 + month)
    start = month_moment(month, FIRST_EVENT_DAY)
    span_ms = int((month_moment(month, LAST_EVENT_DAY + 1) - start) / timedelta(milliseconds=1))

    def moment() -> str:
        return _timestamp(start + timedelta(milliseconds=rng.randrange(span_ms)))

    activity = [
        orjson.dumps({"user_id": user_id(n), "occurred_at": moment(), "activity": activity_type})
        for n in range(users)
    ]
    label = domain.month_label(month)
    tickets = [
        orjson.dumps(
            {
                "ticket_id": f"soak-{label}-{k:07d}",
                "user_id": user_id(rng.randrange(users)),
                "created_at": moment(),
                "channel": rng.choice(("web", "email", "chat", "phone")),
            }
        )
        for k in range(round(users * tickets_per_user))
    ]
    return MonthTraffic(activity, tickets)
