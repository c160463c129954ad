"""DashboardSource without a broker: records in, change signal and shared live events out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson

from streams import domain
from streams.pipeline.emit import update_key, update_value
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, load_settings
from streams.web.dashboard.source import DashboardSource
from streams.web.dashboard.view import live_changes
from tests.live_changes import apply_changes

# The source reads the clock (retention), so the figures are of the current month.
NOW = datetime.now(UTC)
MONTH = domain.month_of(NOW, ZoneInfo("UTC"))


Record = tuple[str, bytes, bytes | None]


def record(topic: str, key: bytes, value: bytes | None) -> Record:
    return topic, key, value


def poll(dashboard: DashboardSource, records: list[Record]) -> None:
    """What one poll of the followers does: apply each record, then publish once."""
    for topic, key, value in records:
        dashboard.apply(topic, key, value)
    dashboard.publish_changes()


def update(tickets: int, version: int, segment: str = "free") -> Record:
    value = update_value(MONTH, "plan", segment, tickets, 10, version, NOW)
    return record(TOPIC_UPDATES, update_key(MONTH, "plan", segment).encode(), orjson.dumps(value))


def source() -> DashboardSource:
    return DashboardSource(load_settings({"CCI_KAFKA_BOOTSTRAP": "127.0.0.1:1"}))


def test_one_generation_per_poll_that_changed_something() -> None:
    dashboard = source()
    poll(dashboard, [update(1, 1), update(2, 2), update(1, 1, "paid")])
    assert dashboard.generation == 1
    poll(dashboard, [update(2, 2)])  # a resend: nothing changed
    assert dashboard.generation == 1
    poll(dashboard, [record(TOPIC_ALERTS, b"k", b"not an alert")])
    assert dashboard.generation == 1
    poll(dashboard, [update(3, 3)])
    assert dashboard.generation == 2


async def test_waiting_streams_wake_on_a_change_and_on_close() -> None:
    dashboard = source()
    waiting = asyncio.create_task(dashboard.wait_for_change(0, timeout=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    poll(dashboard, [update(1, 1)])
    assert await asyncio.wait_for(waiting, 5) == 1
    # Nothing new: the keep-alive timeout ends the wait with the same generation.
    assert await dashboard.wait_for_change(1, timeout=0.01) == 1
    waiting = asyncio.create_task(dashboard.wait_for_change(1, timeout=30))
    await asyncio.sleep(0)
    dashboard.close()
    assert await asyncio.wait_for(waiting, 5) == 1
    await asyncio.wait_for(dashboard.pause(30), 5)  # closed: no pause


def payload(event: bytes | None) -> object:
    assert event is not None
    return orjson.loads(event.split(b"data: ", 1)[1])


def test_clients_of_one_month_share_the_live_event_until_a_change() -> None:
    dashboard = source()
    poll(dashboard, [update(1, 1)])
    first, sent = dashboard.live_update(None, None)
    assert dashboard.live_update(None, None)[0] is first
    assert first is not None and first.startswith(b"event: cci\ndata: ")
    assert payload(first)["cci"]["dimensions"]["plan"][0]["tickets"] == 1  # type: ignore[index]
    assert dashboard.live_update(domain.month_label(MONTH - 1), None)[0] is not first
    # Nothing changed since: nothing to send.
    assert dashboard.live_update(None, sent)[0] is None


def test_after_the_first_push_only_the_changes_are_sent() -> None:
    dashboard = source()
    poll(dashboard, [update(1, 1), update(2, 1, "paid")])
    first, sent = dashboard.live_update(None, None)
    poll(dashboard, [update(4, 2)])
    changes, _ = dashboard.live_update(None, sent)
    assert changes is not None and changes.startswith(b"event: cci-changes\ndata: ")
    assert dashboard.live_update(None, sent)[0] is changes  # shared by streams at that point
    # The changes turn what the stream had into what a new stream gets whole.
    whole = dashboard.live_update(None, None)[0]
    assert apply_changes(payload(first), payload(changes)) == payload(whole)
    assert len(changes) < len(whole)


def test_live_changes_keep_the_order_and_send_only_what_changed() -> None:
    old = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert live_changes(old, old) == []
    assert live_changes(old, {"a": {"x": 1, "y": [1, 3]}, "b": 2}) == [[["a", "y", 1], 3]]
    assert live_changes(old, {"a": {"x": 2, "y": [1, 2]}, "b": 3}) == [
        [["a", "x"], 2],
        [["b"], 3],
    ]
    # A new key or a longer list: sent whole, so the page keeps the server's order.
    grown = {"a": {"w": 0, "x": 1, "y": [1, 2]}, "b": 2}
    assert live_changes(old, grown) == [[["a"], grown["a"]]]
    assert live_changes(old, {"a": {"x": 1, "y": [0, 1, 2]}, "b": 2}) == [[["a", "y"], [0, 1, 2]]]
    assert live_changes(old, [1]) == [[[], [1]]]
    # A flat record (a segment's row) changes whole.
    rows = [{"segment": "a", "tickets": 1, "cci": 0.1}, {"segment": "b", "tickets": 2, "cci": 0.2}]
    more = [rows[0], {"segment": "b", "tickets": 3, "cci": 0.3}]
    assert live_changes({"rows": rows}, {"rows": more}) == [[["rows", 1], more[1]]]
