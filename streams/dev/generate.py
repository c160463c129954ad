"""Realistic synthetic traffic for the three input topics, and the exact figures it must yield.

Users differ by plan, product, region and tenure, and so do their contact rates (free users write
in more than paid ones, paid more than VIP, new customers more than long-time ones), so the
per-segment figures look like the article's findings. The traffic also carries what makes an exact
count hard: resent and amended tickets, events shuffled within a month and some delivered months
late, plan upgrades that show in the events' own segments before the profile catches up, profiles
updated twice and arriving in any order, and users without any profile.

Everything is drawn from one ``random.Random(seed)``, so a seed and a ``now`` give the same bytes.
No event time is after ``now``.
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

import orjson

from streams import domain
from streams.pipeline import recount as batch
from streams.settings import Settings

# --- the population's shape --------------------------------------------------------------------
# (value, weight) pairs; weights need not sum to 1.
PLANS: tuple[tuple[str, float], ...] = (("free", 0.6), ("paid", 0.3), ("vip", 0.1))
PRODUCTS: tuple[tuple[str, float], ...] = (("boards", 0.45), ("docs", 0.35), ("chat", 0.2))
REGIONS: tuple[tuple[str, float], ...] = (("eu", 0.4), ("us", 0.4), ("apac", 0.2))
# Not a default dimension: present so CCI_EXTRA_DIMENSIONS=company_size has something to split by.
COMPANY_SIZES: tuple[tuple[str, float], ...] = (("1-10", 0.5), ("11-50", 0.3), ("51+", 0.2))
ACTIVITIES: tuple[tuple[str, float], ...] = (
    ("login", 0.35),
    ("page_view", 0.45),
    ("api_call", 0.15),
    ("purchase", 0.05),
)
# Activity records of an active user in a month. Kept low: one is enough to be active, and the
# volume of activity records is what a 100k-user data set's generation and recount cost.
ACTIVITY_COUNTS: tuple[tuple[int, float], ...] = ((1, 0.5), (2, 0.27), (3, 0.14), (4, 0.09))
CHANNELS_BY_PLAN: dict[str, tuple[tuple[str, float], ...]] = {
    "free": (("web", 0.45), ("email", 0.35), ("chat", 0.15), ("phone", 0.05)),
    "paid": (("email", 0.35), ("chat", 0.35), ("web", 0.2), ("phone", 0.1)),
    "vip": (("phone", 0.35), ("chat", 0.3), ("email", 0.3), ("web", 0.05)),
}

ACTIVE_PROBABILITY = {"free": 0.55, "paid": 0.8, "vip": 0.9}
NEW_USER_ACTIVE_PROBABILITY = 0.95  # people try a product in the month they sign up
# Mean tickets of an active user-month, before the tenure and product factors.
TICKET_RATE = {"free": 0.42, "paid": 0.2, "vip": 0.09}
TENURE_FACTOR = {"new": 2.0, "1-2m": 1.5, "3-11m": 1.0, "12m+": 0.75, domain.UNKNOWN: 1.0}
PRODUCT_FACTOR = {"boards": 0.9, "docs": 1.0, "chat": 1.25}
# "I cannot log in" and billing questions come from users without any activity that month.
INACTIVE_TICKET_RATE = 0.02

NO_PROFILE_SHARE = 0.02
UPGRADE_SHARE = 0.1  # of free users, upgrading to paid at some moment inside the window
PROFILE_UPDATE_SHARE = 0.05  # of the others: a second profile with a later updated_at
SEGMENTS_ON_EVENTS_SHARE = 0.25  # users whose client attaches segments to every event
NO_CHANNEL_SHARE = 0.04
RESEND_SHARE = 0.03  # tickets sent again as an identical record
AMEND_SHARE = 0.005  # tickets sent again a little later, with the channel drawn anew
LATE_SHARE = 0.02  # records delivered one to four months after their month
SIGNUP_LEAD = 24  # months before the first generated month that signups start
PROGRESS_STEP = 1000

# A client-side offset unrelated to the configured zone, as devices abroad send.
_INDIA = timezone(timedelta(hours=5, minutes=30))


@dataclass
class Dataset:
    """Records of the three input topics, JSON without a trailing newline, in delivery order."""

    users: int
    months: int
    seed: int
    timezone: str
    activity: list[bytes] = field(default_factory=list)
    tickets: list[bytes] = field(default_factory=list)
    profiles: list[bytes] = field(default_factory=list)
    # What the generator put in on purpose (resends, late records, …), for the summary.
    counts: dict[str, int] = field(default_factory=dict)


T = TypeVar("T")


class _Picker(Generic[T]):
    """Weighted choice by bisecting cumulative weights: the hot loop's cheapest draw."""

    def __init__(self, pairs: Sequence[tuple[T, float]]) -> None:
        self.values = [value for value, _ in pairs]
        self.cumulative: list[float] = []
        total = 0.0
        for _, weight in pairs:
            total += weight
            self.cumulative.append(total)
        self.total = total

    def pick(self, rng: random.Random) -> T:
        index = bisect_right(self.cumulative, rng.random() * self.total)
        return self.values[min(index, len(self.values) - 1)]


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: exact and fast for the small means used here.
    limit = math.exp(-mean)
    count, product = 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _millis(moment: datetime) -> int:
    return (moment - domain.EPOCH) // timedelta(milliseconds=1)


class _TimeFormatter:
    """RFC 3339 with offset, in the mix of shapes real producers send.

    Most records are UTC with milliseconds; their date part is cached per day, since formatting
    timestamps is most of the generator's cost.
    """

    def __init__(self, rng: random.Random, zone: ZoneInfo) -> None:
        self.rng = rng
        self.zone = zone
        self.days: dict[int, str] = {}

    def format(self, ms: int) -> str:
        draw = self.rng.random()
        if draw < 0.8:
            day, ms_of_day = divmod(ms, 86_400_000)
            prefix = self.days.get(day)
            if prefix is None:
                prefix = (domain.EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")
                self.days[day] = prefix
            seconds, millis = divmod(ms_of_day, 1000)
            minutes, second = divmod(seconds, 60)
            hour, minute = divmod(minutes, 60)
            return f"{prefix}{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"
        moment = domain.EPOCH + timedelta(milliseconds=ms)
        if draw < 0.9:
            return moment.astimezone(self.zone).isoformat(timespec="milliseconds")
        if draw < 0.95:
            return moment.isoformat(timespec="microseconds")  # "+00:00"
        return moment.astimezone(_INDIA).isoformat(timespec="milliseconds")


def _dumps(record: dict[str, Any]) -> bytes:
    """Compact JSON in a bytes object of its own size.

    orjson returns its whole growth buffer; keeping millions of those fragments the heap so badly
    that generating 100k users took several times as long. Copying out releases the buffer.
    """
    return memoryview(orjson.dumps(record)).tobytes()


def _uniform(rng: random.Random, start: int, stop: int) -> int:
    """An int in [start, stop): randrange's exactness is not needed and it costs 20x as much."""
    return start + int(rng.random() * (stop - start))


def _month_bounds(now: datetime, zone: ZoneInfo, months: int) -> tuple[int, list[int]]:
    """First month index, and the start (ms) of each month plus the end of the last, in ``zone``.

    The last month ends just after ``now``, so no event is drawn later than ``now``.
    """
    last = domain.month_of(now, zone)
    first = last - months + 1
    bounds = []
    for month in range(first, last + 1):
        year, zero_based = divmod(month, 12)
        bounds.append(_millis(datetime(year, zero_based + 1, 1, tzinfo=zone)))
    bounds.append(_millis(now) + 1)
    return first, bounds


@dataclass
class _User:
    user_id: str
    plan: str
    product: str
    region: str
    company_size: str
    signup_ms: int
    signup_month: int
    upgrade_ms: int | None  # free → paid at this moment
    carries_segments: bool
    has_profile: bool

    def plan_at(self, ms: int) -> str:
        if self.upgrade_ms is not None and ms >= self.upgrade_ms:
            return "paid"
        return self.plan

    def segments_at(self, ms: int) -> dict[str, str]:
        return {"plan": self.plan_at(ms), "product": self.product, "region": self.region}


class _Generator:
    def __init__(self, users: int, months: int, seed: int, now: datetime, zone: ZoneInfo) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.zone = zone
        self.times = _TimeFormatter(self.rng, zone)
        self.users = users
        self.months = months
        self.now_ms = _millis(now)
        self.first_month, self.bounds = _month_bounds(now, zone, months)
        year, zero_based = divmod(self.first_month - SIGNUP_LEAD, 12)
        self.signup_start_ms = _millis(datetime(year, zero_based + 1, 1, tzinfo=zone))
        self.plans = _Picker(PLANS)
        self.products = _Picker(PRODUCTS)
        self.regions = _Picker(REGIONS)
        self.sizes = _Picker(COMPANY_SIZES)
        self.activity_types = _Picker(ACTIVITIES)
        self.activity_counts = _Picker(ACTIVITY_COUNTS)
        self.channels = {plan: _Picker(mix) for plan, mix in CHANNELS_BY_PLAN.items()}
        # One bucket per month of delivery; shuffled and concatenated at the end.
        self.activity_buckets: list[list[bytes]] = [[] for _ in range(months)]
        self.ticket_buckets: list[list[bytes]] = [[] for _ in range(months)]
        self.profiles: list[bytes] = []
        self.ticket_seq = 0
        self.counts: dict[str, int] = {
            "users_without_profile": 0,
            "plan_upgrades": 0,
            "profile_updates": 0,
            "tickets": 0,
            "resent_tickets": 0,
            "amended_tickets": 0,
            "late_records": 0,
        }

    def run(self, progress: Callable[[int], None] | None) -> Dataset:
        pending = 0
        for index in range(self.users):
            self._user(self._new_user(index))
            pending += 1
            if progress is not None and pending == PROGRESS_STEP:
                progress(pending)
                pending = 0
        if progress is not None and pending:
            progress(pending)
        rng = self.rng
        activity: list[bytes] = []
        for bucket in self.activity_buckets:
            rng.shuffle(bucket)
            activity.extend(bucket)
        tickets: list[bytes] = []
        for bucket in self.ticket_buckets:
            rng.shuffle(bucket)
            tickets.extend(bucket)
        # Compaction keeps no order between users' versions: the later one may arrive first.
        rng.shuffle(self.profiles)
        return Dataset(
            users=self.users,
            months=self.months,
            seed=self.seed,
            timezone=self.zone.key,
            activity=activity,
            tickets=tickets,
            profiles=self.profiles,
            counts={
                "activity_records": len(activity),
                "ticket_records": len(tickets),
                "profile_records": len(self.profiles),
                **self.counts,
            },
        )

    def _new_user(self, index: int) -> _User:
        rng = self.rng
        plan = self.plans.pick(rng)
        signup_ms = rng.randrange(self.signup_start_ms, self.now_ms + 1)
        signup_month = domain.month_of(domain.EPOCH + timedelta(milliseconds=signup_ms), self.zone)
        upgrade_ms = None
        window_start = max(signup_ms, self.bounds[0])
        if plan == "free" and window_start < self.now_ms and rng.random() < UPGRADE_SHARE:
            upgrade_ms = rng.randrange(window_start + 1, self.now_ms + 1)
        return _User(
            user_id=f"user-{index:07d}",
            plan=plan,
            product=self.products.pick(rng),
            region=self.regions.pick(rng),
            company_size=self.sizes.pick(rng),
            signup_ms=signup_ms,
            signup_month=signup_month,
            upgrade_ms=upgrade_ms,
            # Upgraders' events carry the plan of their moment, which the profile cannot.
            carries_segments=upgrade_ms is not None or rng.random() < SEGMENTS_ON_EVENTS_SHARE,
            has_profile=rng.random() >= NO_PROFILE_SHARE,
        )

    def _user(self, user: _User) -> None:
        rng = self.rng
        if user.has_profile:
            self._profiles(user)
        else:
            self.counts["users_without_profile"] += 1
        for offset in range(self.months):
            start, end = self.bounds[offset], self.bounds[offset + 1]
            if end <= user.signup_ms:
                continue  # not a customer yet
            start = max(start, user.signup_ms)
            month = self.first_month + offset
            # A user without a profile has tenure unknown in the figures; the model agrees.
            signup_month = user.signup_month if user.has_profile else None
            tenure = domain.tenure_bucket(signup_month, month)
            plan = user.plan_at(start)
            active_probability = (
                NEW_USER_ACTIVE_PROBABILITY if tenure == "new" else ACTIVE_PROBABILITY[plan]
            )
            if rng.random() < active_probability:
                for _ in range(self.activity_counts.pick(rng)):
                    self._activity(user, offset, _uniform(rng, start, end))
                rate = TICKET_RATE[plan] * TENURE_FACTOR[tenure] * PRODUCT_FACTOR[user.product]
            else:
                rate = INACTIVE_TICKET_RATE
            for _ in range(_poisson(rng, rate)):
                self._ticket(user, offset, _uniform(rng, start, end))

    def _profiles(self, user: _User) -> None:
        rng = self.rng
        segments = {
            "plan": user.plan,
            "product": user.product,
            "region": user.region,
            "company_size": user.company_size,
        }
        self._profile(user, segments, user.signup_ms)
        if user.upgrade_ms is not None:
            self.counts["plan_upgrades"] += 1
            self._profile(user, {**segments, "plan": "paid"}, user.upgrade_ms)
        elif user.signup_ms < self.now_ms and rng.random() < PROFILE_UPDATE_SHARE:
            # A corrected region, e.g. after a billing-address change.
            self.counts["profile_updates"] += 1
            region = self.regions.pick(rng)
            updated_ms = rng.randrange(user.signup_ms + 1, self.now_ms + 1)
            self._profile(user, {**segments, "region": region}, updated_ms)

    def _profile(self, user: _User, segments: dict[str, str], updated_ms: int) -> None:
        record = {
            "user_id": user.user_id,
            "signup_at": self.times.format(user.signup_ms),
            "segments": segments,
            "updated_at": self.times.format(updated_ms),
        }
        self.profiles.append(_dumps(record))

    def _delivery_bucket(self, offset: int) -> int:
        if offset + 1 < self.months and self.rng.random() < LATE_SHARE:
            self.counts["late_records"] += 1
            return min(offset + self.rng.randint(1, 4), self.months - 1)
        return offset

    def _activity(self, user: _User, offset: int, ms: int) -> None:
        rng = self.rng
        record: dict[str, Any] = {
            "user_id": user.user_id,
            "occurred_at": self.times.format(ms),
            "activity": self.activity_types.pick(rng),
        }
        if user.carries_segments:
            record["segments"] = user.segments_at(ms)
        self.activity_buckets[self._delivery_bucket(offset)].append(_dumps(record))

    def _ticket(self, user: _User, offset: int, ms: int) -> None:
        rng = self.rng
        self.ticket_seq += 1
        self.counts["tickets"] += 1
        record: dict[str, Any] = {
            "ticket_id": f"tkt-{self.ticket_seq:09d}",
            "user_id": user.user_id,
            "created_at": self.times.format(ms),
        }
        draw = rng.random()
        if draw >= NO_CHANNEL_SHARE:
            record["channel"] = self.channels[user.plan_at(ms)].pick(rng)
        elif draw < NO_CHANNEL_SHARE / 2:
            record["channel"] = None  # the other half leave the key out
        if user.carries_segments:
            record["segments"] = user.segments_at(ms)
        line = _dumps(record)
        self.ticket_buckets[self._delivery_bucket(offset)].append(line)
        draw = rng.random()
        if draw < RESEND_SHARE:
            # A producer retry: identical bytes, mostly soon after, sometimes months later.
            self.counts["resent_tickets"] += 1
            later = 0 if rng.random() < 0.6 else rng.randint(1, 6)
            self.ticket_buckets[min(offset + later, self.months - 1)].append(line)
        elif draw < RESEND_SHARE + AMEND_SHARE:
            # A re-export from the helpdesk: a later timestamp, the channel drawn anew. The
            # earliest version must win, whichever arrives first.
            self.counts["amended_tickets"] += 1
            amended_ms = min(ms + rng.randrange(1_000, 3_600_000), self.now_ms)
            amended = {
                **record,
                "created_at": self.times.format(amended_ms),
                "channel": self.channels["paid"].pick(rng),
            }
            if user.carries_segments:
                amended["segments"] = user.segments_at(amended_ms)
            later_offset = min(offset + rng.randint(0, 2), self.months - 1)
            self.ticket_buckets[later_offset].append(_dumps(amended))


def generate(
    users: int,
    months: int,
    seed: int,
    now: datetime,
    zone: ZoneInfo,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Traffic of ``users`` users over the ``months`` calendar months (in ``zone``) ending with
    the month of ``now``.

    ``progress`` is called with the number of users generated since its previous call.
    """
    if users < 1 or months < 1:
        raise ValueError("users and months must be at least 1")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return _Generator(users, months, seed, now, zone).run(progress)


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n" if lines else b"")


def write_dataset(
    dataset: Dataset, out_dir: Path, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Write the three JSON-lines files and ``expected.json``; return a short summary.

    The expected figures are the batch recount of exactly these records under ``settings`` (time
    zone, retained months, active activities, extra dimensions) as of ``now``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_lines(out_dir / "activity.jsonl", dataset.activity)
    _write_lines(out_dir / "tickets.jsonl", dataset.tickets)
    _write_lines(out_dir / "profiles.jsonl", dataset.profiles)
    result = batch.recount(dataset.activity, dataset.tickets, dataset.profiles, now, settings)
    figures = batch.expected_updates(result.figures)
    counts = {
        **dataset.counts,
        "active_user_months": result.active_user_months,
        "distinct_tickets": result.distinct_tickets,
        "inactive_activities": result.inactive_activities,
        "dead_letters": dict(sorted(result.dead_letters.items())),
        "invalid_profiles": dict(sorted(result.invalid_profiles.items())),
        "figures": len(figures),
    }
    expected = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "now": now.isoformat(),
        "timezone": settings.timezone,
        "seed": dataset.seed,
        "users": dataset.users,
        "months": dataset.months,
        "counts": counts,
        "figures": figures,
    }
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    return {
        "activity": len(dataset.activity),
        "tickets": len(dataset.tickets),
        "profiles": len(dataset.profiles),
        "figures": len(figures),
        "dead_letters": sum(result.dead_letters.values()),
    }


def load_expected(path: Path) -> dict[batch.FigureKey, batch.Figure]:
    """(month, dimension, segment) → (tickets, active_users) from an ``expected.json``."""
    document = json.loads(path.read_text())
    return {
        (row["month"], row["dimension"], row["segment"]): (row["tickets"], row["active_users"])
        for row in document["figures"]
    }
