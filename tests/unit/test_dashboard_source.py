"""DashboardSource without a broker: records in, change signal and shared live events out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson

from streams import domain
from streams.dashboard.source import DashboardSource
from streams.emit import update_key, update_value
from streams.settings import TOPIC_ALERTS, TOPIC_UPDATES, load_settings

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


def test_clients_of_one_month_share_the_live_event_until_a_change() -> None:
    dashboard = source()
    poll(dashboard, [update(1, 1)])
    first = dashboard.live_event(None)
    assert dashboard.live_event(None) is first
    assert first.startswith(b"event: cci\ndata: ")
    assert (
        orjson.loads(first.split(b"data: ", 1)[1])["cci"]["dimensions"]["plan"][0]["tickets"] == 1
    )
    assert dashboard.live_event(domain.month_label(MONTH - 1)) is not first
    poll(dashboard, [update(4, 2)])
    changed = dashboard.live_event(None)
    assert (
        orjson.loads(changed.split(b"data: ", 1)[1])["cci"]["dimensions"]["plan"][0]["tickets"] == 4
    )
