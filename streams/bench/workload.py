"""The data of one ``cci bench`` run: generated traffic cut to N events, its batch recount (the
expected figures every result is checked against), and loading it into the broker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from streams.bench.phase import BenchUsageError, Figures, Say
from streams.bench.traffic import cut_to, users_for_events
from streams.dev.generate import generate
from streams.dev.produce import key_of, produce_in_bulk, produce_records
from streams.kafka.admin import TopicSpec
from streams.pipeline.recount import recount
from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS, TOPIC_UPDATES, Settings
from streams.topics import topic_catalogue

SAMPLE_USERS = 2000  # generated first to learn how many events a user makes


@dataclass(frozen=True)
class BenchOptions:
    events: int = 1_000_000
    users: int | None = None  # None: as many as make ``events``
    months: int = 3
    offered_rate: float = 10_000
    latency_seconds: float = 20.0
    seed: int = 1
    peers: tuple[str, ...] = ("quix",)  # names in streams.bench.peers.PEERS, run in this order
    skip_latency: bool = False


@dataclass
class Workload:
    activity: list[bytes]
    tickets: list[bytes]
    profiles: list[bytes]
    users: int
    now: datetime
    expected: Figures
    user_months: int

    @property
    def events(self) -> int:
        return len(self.activity) + len(self.tickets)


def prepare_workload(settings: Settings, options: BenchOptions, say: Say) -> Workload:
    now = datetime.now(UTC)
    users = options.users
    if users is None:
        sample = generate(SAMPLE_USERS, options.months, options.seed, now, settings.zone)
        users = users_for_events(
            options.events, SAMPLE_USERS, len(sample.activity) + len(sample.tickets)
        )
    say(f"generating {users:,} users' traffic over {options.months} months…")
    data = generate(users, options.months, options.seed, now, settings.zone)
    try:
        activity, tickets = cut_to(data.activity, data.tickets, options.events)
    except ValueError:
        made = len(data.activity) + len(data.tickets)
        raise BenchUsageError(
            "--users",
            f"{users:,} users make only {made:,} events over {options.months} months, fewer than "
            f"--events {options.events:,}; raise --users or leave it out",
        ) from None
    say(f"recounting {len(activity) + len(tickets):,} events (the expected figures)…")
    result = recount(activity, tickets, data.profiles, now, settings)
    return Workload(
        activity, tickets, data.profiles, users, now, result.figures, result.active_user_months
    )


def bench_topics(settings: Settings, peer_outputs: list[str]) -> dict[str, TopicSpec]:
    """The pipeline's topics and the peers' outputs, all with explicit configs (the embedded
    broker reports none for a topic created without)."""
    topics = topic_catalogue(settings)
    for output in peer_outputs:
        topics[output] = topics[TOPIC_UPDATES]
    return topics


async def load_inputs(bootstrap: str, workload: Workload) -> None:
    await produce_in_bulk(
        bootstrap, TOPIC_PROFILES, ((key_of(value), value) for value in workload.profiles)
    )
    for topic, values in ((TOPIC_ACTIVITY, workload.activity), (TOPIC_TICKETS, workload.tickets)):
        await produce_records(
            bootstrap, topic, ((key_of(value), value) for value in values), one_record_batches=False
        )
