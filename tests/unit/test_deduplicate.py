"""PartitionState: exact, order-independent dedup of user-months and tickets, and its recovery."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from streams import domain
from streams.pipeline.deduplicate import (
    TICKET_VERSION_MASK,
    Fact,
    PartitionState,
    SegmentKey,
    pack_ticket,
    ticket_user,
)
from streams.pipeline.enrich import (
    ActiveFact,
    Attributes,
    TicketFact,
    decode_facts_record,
    encode_facts,
)
from streams.pipeline.recount import fold, guarded

DIMENSIONS = domain.user_dimensions(())  # plan, product, region, tenure
TICKET_DIMENSIONS = (*DIMENSIONS, domain.CHANNEL)
MARCH = domain.month_from_label("2026-03")
FEBRUARY = MARCH - 1
JANUARY = MARCH - 2
GLOBAL: SegmentKey = (domain.ALL, domain.ALL)

Snapshot = dict[int, dict[SegmentKey, int]]


def _ts(month: int, offset: int = 0) -> int:
    """An event time inside ``month``; only the order of times matters to the state."""
    return month * 10_000 + offset


def _attributes(plan: str = "free", region: str = "eu") -> Attributes:
    return (plan, "boards", region, "new")


def active(
    user_id: str, month: int = MARCH, offset: int = 0, plan: str = "free", region: str = "eu"
) -> ActiveFact:
    return ActiveFact(user_id, month, _ts(month, offset), _attributes(plan, region))


def ticket(
    ticket_id: str, month: int = MARCH, offset: int = 0, plan: str = "free", channel: str = "email"
) -> TicketFact:
    return TicketFact(ticket_id, month, _ts(month, offset), (*_attributes(plan), channel))


def nonzero(counts: dict[int, Counter[SegmentKey]]) -> Snapshot:
    """Counts without the zero entries a state may hold until its next drain."""
    snapshot = {month: {k: n for k, n in counter.items() if n} for month, counter in counts.items()}
    return {month: keys for month, keys in snapshot.items() if keys}


def snapshot(state: PartitionState) -> tuple[Snapshot, Snapshot]:
    return nonzero(state.active_counts), nonzero(state.ticket_counts)


def winners(state: PartitionState) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    return state.winning_versions()


def drain(state: PartitionState) -> dict[int, dict[str, list[int]]]:
    return {partial.month: partial.counts for partial in state.drain_dirty()}


def applied(facts: list[Fact], seq: int = 0) -> PartitionState:
    state = PartitionState(DIMENSIONS)
    state.apply(facts, seq)
    return state


# --- active users --------------------------------------------------------------------------------


def test_a_user_active_several_times_in_a_month_counts_once() -> None:
    state = applied([active("u1", offset=5), active("u1", offset=1), active("u1", offset=9)])

    assert state.active_counts[MARCH][GLOBAL] == 1
    assert state.active_counts[MARCH][("plan", "free")] == 1
    assert state.user_months() == 1


def test_a_user_active_in_two_months_counts_once_in_each() -> None:
    state = applied([active("u1", FEBRUARY), active("u1", MARCH), active("u1", MARCH, 3)])

    assert state.active_counts[FEBRUARY][GLOBAL] == 1
    assert state.active_counts[MARCH][GLOBAL] == 1
    assert state.user_months() == 2


def test_reapplying_a_fact_or_a_whole_batch_changes_nothing() -> None:
    batch: list[Fact] = [active("u1"), active("u2", plan="paid"), ticket("t1"), ticket("t2")]
    state = applied(batch, seq=1)
    before = snapshot(state), winners(state)

    assert state.apply([batch[0]], seq=2) == {}
    assert state.apply(batch, seq=3) == {}
    assert (snapshot(state), winners(state)) == before
    assert state.active_counts[MARCH][GLOBAL] == 2
    assert state.ticket_counts[MARCH][GLOBAL] == 2


def test_apply_returns_the_winners_per_month() -> None:
    state = PartitionState(DIMENSIONS)
    first, repeat = active("u1", MARCH), active("u1", MARCH, 4)

    changed = state.apply([first, repeat, active("u1", FEBRUARY), ticket("t1")], seq=0)

    assert changed == {MARCH: [first, ticket("t1")], FEBRUARY: [active("u1", FEBRUARY)]}


@pytest.mark.parametrize("kind", ["active", "ticket"])
def test_the_earliest_version_wins_whatever_the_arrival_order(kind: str) -> None:
    make = active if kind == "active" else ticket
    early, late = make("x", offset=1, plan="free"), make("x", offset=2, plan="paid")

    forward = applied([early, late])
    backward = PartitionState(DIMENSIONS)
    backward.apply([late], seq=0)
    backward.apply([early], seq=1)

    assert snapshot(forward) == snapshot(backward)
    assert winners(forward) == winners(backward)
    counts = forward.active_counts if kind == "active" else forward.ticket_counts
    assert counts[MARCH][("plan", "free")] == 1
    assert counts[MARCH][("plan", "paid")] == 0
    assert counts[MARCH][GLOBAL] == 1


@pytest.mark.parametrize("kind", ["active", "ticket"])
def test_with_equal_timestamps_the_smaller_attribute_tuple_wins(kind: str) -> None:
    make = active if kind == "active" else ticket
    paid, free = make("x", plan="paid"), make("x", plan="free")  # "free" < "paid"

    for order in ([paid, free], [free, paid]):
        state = PartitionState(DIMENSIONS)
        for seq, fact in enumerate(order):
            state.apply([fact], seq)
        counts = state.active_counts if kind == "active" else state.ticket_counts
        assert counts[MARCH][("plan", "free")] == 1, order
        assert counts[MARCH][("plan", "paid")] == 0, order


def test_a_ticket_tied_on_time_and_attributes_keeps_the_smaller_user() -> None:
    by_ann = TicketFact("t1", MARCH, _ts(MARCH), (*_attributes(), "web"), "ann")
    by_bob = TicketFact("t1", MARCH, _ts(MARCH), (*_attributes(), "web"), "bob")

    for order in ([by_ann, by_bob], [by_bob, by_ann]):
        state = PartitionState(DIMENSIONS)
        for seq, fact in enumerate(order):
            state.apply([fact], seq)
        assert state.winning_versions()[1]["t1"][3] == "ann", order
        assert state.ticket_counts[MARCH][GLOBAL] == 1


@pytest.mark.parametrize("user_id", ["ann", "", "\x00lead", "zoë-用户", "u" * 5000])
def test_a_held_ticket_keeps_its_version_and_user_exactly(user_id: str) -> None:
    version = (2**63 + 12345) << 44 | 987654
    held = pack_ticket(version, user_id)
    assert held & TICKET_VERSION_MASK == version
    assert ticket_user(held) == user_id


def test_a_late_earlier_event_moves_the_user_to_another_segment() -> None:
    state = applied([active("u1", offset=5, plan="paid")])
    assert drain(state)[MARCH]["plan|paid"] == [0, 1]

    changed = state.apply([active("u1", offset=1, plan="free")], seq=1)
    published = drain(state)

    assert changed == {MARCH: [active("u1", offset=1, plan="free")]}
    assert published[MARCH]["plan|paid"] == [0, 0]
    assert published[MARCH]["plan|free"] == [0, 1]
    assert published[MARCH]["all|all"] == [0, 1]
    assert nonzero(state.active_counts)[MARCH][("plan", "free")] == 1
    # The emptied segment is published as 0 once, then forgotten.
    assert ("plan", "paid") not in state.active_counts[MARCH]
    assert drain(state) == {}


def test_a_segment_left_and_rejoined_between_two_publishes_is_not_republished() -> None:
    state = applied([active("u1", offset=5, plan="paid"), active("u2", offset=5, plan="free")])
    drain(state)

    # u1 moves to free, then (an even earlier event) back to paid, before the next publish.
    state.apply([active("u1", offset=3, plan="free")], seq=1)
    state.apply([active("u1", offset=1, plan="paid")], seq=2)

    assert drain(state) == {}  # every count is where it was
    assert nonzero(state.active_counts)[MARCH][("plan", "paid")] == 1
    assert nonzero(state.active_counts)[MARCH][("plan", "free")] == 1


def test_a_resent_ticket_counts_once() -> None:
    state = applied([ticket("t1")], seq=0)

    assert state.apply([ticket("t1")], seq=1) == {}
    assert state.apply([ticket("t1"), ticket("t1")], seq=2) == {}
    assert state.ticket_counts[MARCH][GLOBAL] == 1
    assert state.ticket_counts[MARCH][("channel", "email")] == 1


def test_an_earlier_version_of_a_ticket_in_a_previous_month_moves_it_there() -> None:
    state = applied([ticket("t1", MARCH, channel="web")], seq=0)
    drain(state)

    changed = state.apply([ticket("t1", FEBRUARY, offset=9_000, channel="email")], seq=1)
    published = drain(state)

    assert list(changed) == [FEBRUARY]
    assert state.ticket_counts[MARCH][GLOBAL] == 0
    assert state.ticket_counts[FEBRUARY][GLOBAL] == 1
    assert published[MARCH]["all|all"] == [0, 0]
    assert published[MARCH]["channel|web"] == [0, 0]
    assert published[FEBRUARY]["all|all"] == [1, 0]
    assert published[FEBRUARY]["channel|email"] == [1, 0]
    # The later version arriving again must not move it back.
    assert state.apply([ticket("t1", MARCH, channel="web")], seq=2) == {}
    assert set(nonzero(state.ticket_counts)) == {FEBRUARY}


def test_tickets_count_per_channel_and_channels_carry_no_active_users() -> None:
    state = applied(
        [
            active("u1"),
            ticket("t1", channel="email"),
            ticket("t2", channel="email"),
            ticket("t3", channel="phone"),
        ]
    )

    assert state.ticket_counts[MARCH][("channel", "email")] == 2
    assert state.ticket_counts[MARCH][("channel", "phone")] == 1
    published = drain(state)[MARCH]
    assert published["channel|email"] == [2, 0]
    assert published["channel|phone"] == [1, 0]
    assert published["all|all"] == [3, 1]
    assert published["plan|free"] == [3, 1]


# --- recovery ------------------------------------------------------------------------------------


def apply_logged(
    state: PartitionState, facts: list[Fact], seq: int, log: list[tuple[str, Any]]
) -> None:
    """Apply as the dedup agent does, appending each changelog chunk (JSON round-tripped) to log."""
    for month, month_winners in state.apply(facts, seq).items():
        key, value = state.encode_chunk(month, seq, month_winners)
        log.append((key, json.loads(json.dumps(value))))


def recover(log: list[tuple[str, Any]], oldest_month: int, seed: int) -> PartitionState:
    shuffled = list(log)
    random.Random(seed).shuffle(shuffled)
    state = PartitionState(DIMENSIONS)
    for key, value in shuffled:
        state.apply_chunk(key, value, oldest_month)
    return state


def _recovery_history() -> list[list[Fact]]:
    """Batches where order matters: later versions first, moves between segments and months."""
    return [
        [active("u1", offset=5, plan="paid"), ticket("t1", MARCH, channel="web")],
        [active("u1", offset=1, plan="free"), active("u2", FEBRUARY), ticket("t2", FEBRUARY)],
        [ticket("t1", FEBRUARY, offset=9_000), active("u1", FEBRUARY), ticket("t2", FEBRUARY)],
        [active("u3", JANUARY), ticket("t3", JANUARY), active("u1", offset=3, plan="vip")],
        [active("u4", region="us"), ticket("t4", plan="paid", channel="chat")],
    ]


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_changelog_chunks_rebuild_the_same_state(seed: int) -> None:
    live = PartitionState(DIMENSIONS)
    log: list[tuple[str, Any]] = []
    for seq, batch in enumerate(_recovery_history()):
        apply_logged(live, batch, seq * 10, log)

    recovered = recover(log, oldest_month=JANUARY, seed=seed)

    assert snapshot(recovered) == snapshot(live)
    assert winners(recovered) == winners(live)
    assert recovered.applied_seq == live.applied_seq == 40
    assert recovered.chunk_keys == live.chunk_keys


def test_recovery_skips_tombstones_and_months_before_the_oldest_kept() -> None:
    live = PartitionState(DIMENSIONS)
    log: list[tuple[str, Any]] = []
    for seq, batch in enumerate(_recovery_history()):
        apply_logged(live, batch, seq, log)
    january_keys = sorted(key for key, _ in log if key.startswith("2026-01@"))
    assert january_keys  # the history must reach into January for this test to mean anything
    live.expire(FEBRUARY)

    with_tombstones = [*log, *((key, None) for key in january_keys), ("2026-03@99", None)]
    recovered = recover(with_tombstones, oldest_month=FEBRUARY, seed=3)

    assert snapshot(recovered) == snapshot(live)
    assert winners(recovered) == winners(live)
    assert JANUARY not in recovered.actives
    assert JANUARY not in recovered.ticket_counts
    assert not recovered.chunk_keys.get(JANUARY)


def test_a_tombstone_or_an_expired_chunk_alone_leaves_a_fresh_state_empty() -> None:
    state = PartitionState(DIMENSIONS)
    expired_value = {"seq": 7, "a": [["u1", _ts(JANUARY), list(_attributes())]], "t": []}

    state.apply_chunk("2026-03@3", None, FEBRUARY)
    state.apply_chunk("2026-01@7", expired_value, FEBRUARY)

    assert snapshot(state) == ({}, {})
    assert state.user_months() == 0
    assert state.applied_seq == -1
    assert drain(state) == {}


# --- retention -----------------------------------------------------------------------------------


def test_expire_drops_old_months_and_returns_their_chunk_keys() -> None:
    state = PartitionState(DIMENSIONS)
    log: list[tuple[str, Any]] = []
    apply_logged(state, [active("u1", JANUARY), ticket("t1", JANUARY)], 1, log)
    apply_logged(state, [active("u2", FEBRUARY), ticket("t2", FEBRUARY)], 2, log)
    apply_logged(state, [active("u3", JANUARY), active("u3", MARCH), ticket("t3", MARCH)], 3, log)

    expired = state.expire(FEBRUARY)

    assert sorted(expired) == ["2026-01@1", "2026-01@3"]
    assert set(state.actives) == {FEBRUARY, MARCH}
    assert set(nonzero(state.active_counts)) == {FEBRUARY, MARCH}
    assert set(nonzero(state.ticket_counts)) == {FEBRUARY, MARCH}
    assert set(state.tickets) == {"t2", "t3"}
    assert set(drain(state)) == {FEBRUARY, MARCH}  # January's pending figures went with it
    assert state.expire(FEBRUARY) == []


# --- publishing ----------------------------------------------------------------------------------


def test_mark_all_dirty_republishes_every_figure_as_absolute_values() -> None:
    state = applied(
        [
            active("u1"),
            active("u2", plan="paid", region="us"),
            ticket("t1", channel="chat"),
            active("u1", FEBRUARY),
        ]
    )
    drain(state)
    assert drain(state) == {}

    state.mark_all_dirty()

    assert drain(state) == {
        MARCH: {
            "all|all": [1, 2],
            "plan|free": [1, 1],
            "plan|paid": [0, 1],
            "product|boards": [1, 2],
            "region|eu": [1, 1],
            "region|us": [0, 1],
            "tenure|new": [1, 2],
            "channel|chat": [1, 0],
        },
        FEBRUARY: {
            "all|all": [0, 1],
            "plan|free": [0, 1],
            "product|boards": [0, 1],
            "region|eu": [0, 1],
            "tenure|new": [0, 1],
        },
    }


def test_mark_all_dirty_leaves_out_segments_that_emptied() -> None:
    state = applied([active("u1", offset=5, plan="paid")])
    state.apply([active("u1", offset=1, plan="free")], seq=1)
    drain(state)

    state.mark_all_dirty()

    assert "plan|paid" not in drain(state)[MARCH]


# --- property: any batching and order equals a plain recount -------------------------------------

PLANS = ("free", "paid")
REGIONS = ("eu", "us")
TENURES = ("new", "12m+")
CHANNELS = ("email", "web", "chat")
MONTHS = (JANUARY, FEBRUARY, MARCH)


def random_facts(rng: random.Random, count: int) -> list[Fact]:
    """Few ids and a narrow time range, so versions collide, tie and disagree often."""
    facts: list[Fact] = []
    for _ in range(count):
        if facts and rng.random() < 0.2:
            facts.append(rng.choice(facts))  # an exact resend
            continue
        month = rng.choice(MONTHS)
        ts = _ts(month, rng.randrange(8))
        attributes = (rng.choice(PLANS), "boards", rng.choice(REGIONS), rng.choice(TENURES))
        if rng.random() < 0.5:
            facts.append(ActiveFact(f"u{rng.randrange(25)}", month, ts, attributes))
        else:
            channel = rng.choice(CHANNELS)
            facts.append(TicketFact(f"t{rng.randrange(40)}", month, ts, (*attributes, channel)))
    return facts


def recount(facts: list[Fact]) -> tuple[Snapshot, Snapshot]:
    """The obviously correct answer: the minimum version per user-month and per ticket, counted."""
    user_months: dict[tuple[str, int], tuple[int, Attributes]] = {}
    tickets: dict[str, tuple[int, int, Attributes]] = {}
    for fact in facts:
        if isinstance(fact, ActiveFact):
            key, candidate = (fact.user_id, fact.month), (fact.ts, fact.attributes)
            user_months[key] = min(user_months.get(key, candidate), candidate)
        else:
            version = (fact.ts, fact.month, fact.attributes)
            tickets[fact.ticket_id] = min(tickets.get(fact.ticket_id, version), version)
    actives: dict[int, Counter[SegmentKey]] = {}
    for (_user, month), (_ts, attributes) in user_months.items():
        actives.setdefault(month, Counter()).update(domain.segment_keys(DIMENSIONS, attributes))
    ticket_counts: dict[int, Counter[SegmentKey]] = {}
    for _ts, month, attributes in tickets.values():
        ticket_counts.setdefault(month, Counter()).update(
            domain.segment_keys(TICKET_DIMENSIONS, attributes)
        )
    return nonzero(actives), nonzero(ticket_counts)


def random_batches(rng: random.Random, facts: list[Fact]) -> list[list[Fact]]:
    shuffled = list(facts)
    rng.shuffle(shuffled)
    batches: list[list[Fact]] = []
    while shuffled:
        size = rng.randint(1, 12)
        batches.append(shuffled[:size])
        shuffled = shuffled[size:]
    return batches


@pytest.mark.parametrize("seed", range(8))
def test_any_batching_and_order_gives_the_recount(seed: int) -> None:
    rng = random.Random(seed)
    facts = random_facts(rng, 300)
    state = PartitionState(DIMENSIONS)
    log: list[tuple[str, Any]] = []
    # What the aggregate would hold: the last published figure of each key.
    published: dict[int, dict[str, list[int]]] = {}
    for seq, batch in enumerate(random_batches(rng, facts)):
        apply_logged(state, batch, seq, log)
        if rng.random() < 0.3:
            for month, counts, _reset, _seq in state.drain_dirty():
                published.setdefault(month, {}).update(counts)
    for month, counts, _reset, _seq in state.drain_dirty():
        published.setdefault(month, {}).update(counts)

    expected_actives, expected_tickets = recount(facts)
    assert snapshot(state) == (expected_actives, expected_tickets)
    assert {
        month: {key: figure for key, figure in counts.items() if figure != [0, 0]}
        for month, counts in published.items()
    } == _as_published(expected_actives, expected_tickets)

    recovered = recover(log, oldest_month=JANUARY, seed=seed)
    assert snapshot(recovered) == snapshot(state)
    assert winners(recovered) == winners(state)


def _as_published(actives: Snapshot, tickets: Snapshot) -> dict[int, dict[str, list[int]]]:
    figures: dict[int, dict[str, list[int]]] = {}
    for month in set(actives) | set(tickets):
        month_actives, month_tickets = actives.get(month, {}), tickets.get(month, {})
        figures[month] = {
            f"{dimension}|{segment}": [
                month_tickets.get((dimension, segment), 0),
                month_actives.get((dimension, segment), 0),
            ]
            for dimension, segment in set(month_actives) | set(month_tickets)
        }
    return figures


def test_estimated_bytes_samples_close_to_a_full_walk_and_stays_small() -> None:
    facts: list[Fact] = [
        active(f"user-{n:06d}", month, offset=n % 50, plan=("free", "paid")[n % 2])
        for month in (JANUARY, FEBRUARY, MARCH)
        for n in range(4000)
    ]
    facts += [ticket(f"ticket-{n:07d}", MARCH, offset=n % 50) for n in range(1500)]
    # As in the worker: facts arrive as bytes, so the state owns every string it keeps.
    state = applied(decode_facts_record(encode_facts(facts)))

    every_entry = state.estimated_bytes(sample=len(facts))
    assert 0.9 * every_entry <= state.estimated_bytes() <= 1.1 * every_entry
    # The packed layout: under 200 bytes per user-month, tickets included (a full walk counts a
    # user id shared by several months in each, so this errs high).
    assert every_entry / state.user_months() < 200, every_entry / state.user_months()


@pytest.mark.parametrize("seed", range(8))
def test_the_cardinality_guard_publishes_what_the_recount_folds(seed: int) -> None:
    """Many regions and channels, a guard of 3 values: whatever the batching and order, and
    across a recovery (a reset republish), what the aggregate holds is the recount, folded."""
    rng = random.Random(seed)
    facts = [
        fact._replace(
            attributes=(
                fact.attributes[0],
                "boards",
                f"r{rng.randrange(9)}",
                *fact.attributes[3:-1],
                *((f"c{rng.randrange(8)}",) if isinstance(fact, TicketFact) else (fact[3][-1],)),
            )
        )
        for fact in random_facts(rng, 300)
    ]
    state = PartitionState(DIMENSIONS, max_segment_values=3)
    log: list[tuple[str, Any]] = []
    published: dict[int, dict[str, list[int]]] = {}

    def drain(into: PartitionState) -> None:
        for month, counts, reset, _seq in into.drain_dirty():
            if reset:
                published[month] = {}
            published.setdefault(month, {}).update(counts)

    for seq, facts_batch in enumerate(random_batches(rng, facts)):
        apply_logged(state, facts_batch, seq, log)
        if rng.random() < 0.3:
            drain(state)
    drain(state)

    expected_actives, expected_tickets = recount(facts)
    folded_actives: Snapshot = {}
    folded_tickets: Snapshot = {}
    folds: set[str] = set()
    for month in set(expected_actives) | set(expected_tickets):
        actives = Counter(expected_actives.get(month, {}))
        tickets = Counter(expected_tickets.get(month, {}))
        named = guarded(actives, tickets, 3)
        assert "region" in named  # the guard acts
        folds.update(named)
        folded_actives[month] = dict(fold(actives, named))
        folded_tickets[month] = dict(fold(tickets, named))
    assert folds == {"region", "channel"}
    expected = _as_published(folded_actives, folded_tickets)

    def held() -> dict[int, dict[str, list[int]]]:
        return {
            month: {key: figure for key, figure in counts.items() if figure != [0, 0]}
            for month, counts in published.items()
        }

    assert held() == expected
    assert {dimension for _, dimension, _ in state.guard_started} == folds
    # The exact counts are kept: the guard changes only what is published.
    assert snapshot(state) == (expected_actives, expected_tickets)

    recovered = recover(log, oldest_month=JANUARY, seed=seed)
    recovered.max_segment_values = 3
    recovered.mark_all_dirty()
    drain(recovered)
    assert held() == expected


def test_a_chunk_too_large_for_a_record_is_split_and_recovers_whole() -> None:
    facts: list[Fact] = [active(f"user-{n:04d}" + "x" * 200) for n in range(300)]
    state = PartitionState(DIMENSIONS)
    changed = state.apply(facts, 7)
    records = state.encode_chunks(MARCH, 7, changed[MARCH], limit=20_000)
    assert len(records) > 3 and all(len(value) <= 20_000 for _, value in records)
    keys = [key for key, _ in records]
    assert len(set(keys)) == len(keys) and state.chunk_keys[MARCH] == set(keys)

    recovered = PartitionState(DIMENSIONS)
    for key, value in reversed(records):
        recovered.apply_chunk(key, orjson.loads(value), JANUARY)
    assert snapshot(recovered) == snapshot(state)
    assert winners(recovered) == winners(state)
    assert recovered.chunk_keys[MARCH] == set(keys)


def test_a_partial_never_claims_facts_its_counts_do_not_hold() -> None:
    # The worker sends partials one by one, and facts keep being applied meanwhile. A partial
    # stamped with the newest offset but counts read before it let the aggregate refuse, as
    # stale, the lower-stamped corrections a restarted owner sent (figures short after a kill).
    state = PartitionState(DIMENSIONS)
    state.apply([active("u1", FEBRUARY), active("u2", MARCH)], seq=4)
    partials = iter(state.drain_dirty())
    first = next(partials)
    state.apply([active("u3", FEBRUARY), active("u4", MARCH)], seq=5)  # while `first` is sent
    second = next(partials)
    assert (first.seq, second.seq) == (4, 4)
    assert first.counts[f"{domain.ALL}|{domain.ALL}"] == [0, 1]
    assert second.counts[f"{domain.ALL}|{domain.ALL}"] == [0, 1]
    later = {partial.month: partial for partial in state.drain_dirty()}
    assert {month: partial.seq for month, partial in later.items()} == {FEBRUARY: 5, MARCH: 5}
    assert later[MARCH].counts[f"{domain.ALL}|{domain.ALL}"] == [0, 2]
