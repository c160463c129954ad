"""What the bench feeds the pipeline: sizing, cutting, latency-phase events, pacing."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from streams.bench.traffic import cut_to, due_events, latency_events, users_for_events
from streams.settings import TOPIC_ACTIVITY, TOPIC_TICKETS


def test_users_for_events_scales_the_sample_with_headroom() -> None:
    # 2000 users made 8000 events: 4 per user, so 1000 events need 250 users, plus 5 %.
    assert users_for_events(1000, 2000, 8000) == 263
    assert users_for_events(1, 2000, 8000) == 1
    with pytest.raises(ValueError, match="sample"):
        users_for_events(1000, 2000, 0)


def test_cut_keeps_each_inputs_share_and_delivery_order() -> None:
    activity = [f"a{i}".encode() for i in range(80)]
    tickets = [f"t{i}".encode() for i in range(20)]

    cut_activity, cut_tickets = cut_to(activity, tickets, 50)

    assert (len(cut_activity), len(cut_tickets)) == (40, 10)
    assert cut_activity == activity[:40] and cut_tickets == tickets[:10]


def test_cutting_more_than_there_is_is_refused() -> None:
    with pytest.raises(ValueError, match="only 3 events"):
        cut_to([b"a"] * 2, [b"t"], 4)


MOMENT = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def test_latency_events_are_new_users_and_new_tickets_spread_evenly() -> None:
    events = latency_events(100, 0.2, MOMENT)

    tickets = [e for e in events if e.is_ticket]
    assert len(tickets) == 20
    assert [i for i, e in enumerate(events) if e.is_ticket][:3] == [4, 9, 14]
    users = [orjson.loads(e.value)["user_id"] for e in events]
    assert len(set(users)) == 100
    assert all(e.key == u.encode() for e, u in zip(events, users, strict=True))
    ticket_ids = {orjson.loads(e.value)["ticket_id"] for e in tickets}
    assert len(ticket_ids) == 20


def test_latency_events_carry_the_moment_and_the_activity_that_counts() -> None:
    activity, ticket = latency_events(2, 0.5, MOMENT, activity="purchase")

    assert activity.topic == TOPIC_ACTIVITY and ticket.topic == TOPIC_TICKETS
    assert orjson.loads(activity.value) == {
        "user_id": "bench-latency-user-000000000",
        "occurred_at": "2026-11-23T12:00:00.123Z",
        "activity": "purchase",
    }
    assert orjson.loads(ticket.value)["created_at"] == "2026-11-23T12:00:00.123Z"


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_ticket_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="ticket share"):
        latency_events(10, share, MOMENT)


def test_due_events_follow_the_offered_rate_up_to_the_total() -> None:
    assert due_events(10_000, 0.0, 500) == 0
    assert due_events(10_000, 0.0123, 500) == 123
    assert due_events(10_000, 1.0, 500) == 500
    assert due_events(10_000, -1.0, 500) == 0
