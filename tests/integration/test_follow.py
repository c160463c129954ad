"""TopicFollower against a real broker: a whole topic loaded, then caught up on request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streams.dev.broker import EmbeddedBroker
from streams.dev.produce import produce_records
from streams.kafka.admin import TopicSpec, create_topics
from streams.kafka.follow import MISSING_TOPIC_RETRY, TopicFollower, read_topic

WAIT_S = 30.0


def records(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"v{i}".encode()) for i in range(start, stop)]


async def test_loads_every_partition_then_catches_up_on_request(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic = make_topic_name("follow")
    await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=3)})
    await produce_records(broker.bootstrap, topic, records(0, 30), one_record_batches=True)
    seen: list[tuple[bytes | None, bytes | None]] = []
    follower = TopicFollower(broker.bootstrap, topic, lambda key, value: seen.append((key, value)))
    await follower.start()
    try:
        await asyncio.wait_for(follower.loaded.wait(), WAIT_S)
        assert follower.in_sync.is_set()
        assert sorted(seen) == sorted(records(0, 30))

        await produce_records(broker.bootstrap, topic, records(30, 40), one_record_batches=True)
        follower.catch_up()
        assert not follower.in_sync.is_set()
        await asyncio.wait_for(follower.in_sync.wait(), WAIT_S)
        # Everything written before the request has been applied once it is in sync.
        assert sorted(seen) == sorted(records(0, 40))
        assert follower.loaded.is_set()
    finally:
        await follower.stop()


async def test_a_missing_topic_is_loaded_empty(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    seen: list[tuple[bytes | None, bytes | None]] = []
    follower = TopicFollower(
        broker.bootstrap, make_topic_name("absent"), lambda key, value: seen.append((key, value))
    )
    await follower.start()
    try:
        await asyncio.wait_for(follower.loaded.wait(), WAIT_S)
        assert follower.in_sync.is_set() and seen == []
    finally:
        await follower.stop()


async def test_a_topic_created_after_the_start_is_read_from_its_beginning(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic = make_topic_name("later")
    seen: list[tuple[bytes | None, bytes | None]] = []
    polls: list[int] = []
    follower = TopicFollower(
        broker.bootstrap,
        topic,
        lambda key, value: seen.append((key, value)),
        after_poll=lambda: polls.append(len(seen)),
    )
    await follower.start()
    try:
        await asyncio.wait_for(follower.loaded.wait(), WAIT_S)
        await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=2)})
        await produce_records(broker.bootstrap, topic, records(0, 6), one_record_batches=True)
        async with asyncio.timeout(WAIT_S + MISSING_TOPIC_RETRY):
            while len(seen) < 6:
                await asyncio.sleep(0.1)
        assert sorted(seen) == sorted(records(0, 6))
        # after_poll ran after polls that applied records, with everything of the poll applied.
        assert polls and polls[-1] == 6
    finally:
        await follower.stop()


async def test_a_record_that_cannot_be_applied_is_skipped_and_following_goes_on(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic = make_topic_name("poison")
    await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=1)})
    await produce_records(broker.bootstrap, topic, records(0, 5), one_record_batches=True)
    seen: list[bytes | None] = []
    errors: list[Exception] = []

    def apply(key: bytes | None, value: bytes | None) -> None:
        if value == b"v2":
            raise OverflowError("date value out of range")
        seen.append(value)

    follower = TopicFollower(broker.bootstrap, topic, apply, on_apply_error=errors.append)
    await follower.start()
    try:
        await asyncio.wait_for(follower.loaded.wait(), WAIT_S)
        assert seen == [b"v0", b"v1", b"v3", b"v4"]
        assert [type(e) for e in errors] == [OverflowError]
        await produce_records(broker.bootstrap, topic, records(5, 6), one_record_batches=True)
        follower.catch_up()
        await asyncio.wait_for(follower.in_sync.wait(), WAIT_S)
        assert seen[-1] == b"v5" and not follower.failed.is_set()
    finally:
        await follower.stop()


async def test_a_follower_that_fails_says_so(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic = make_topic_name("crash")
    await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=1)})
    await produce_records(broker.bootstrap, topic, records(0, 1), one_record_batches=True)

    def after_poll() -> None:
        raise RuntimeError("following broke")

    follower = TopicFollower(
        broker.bootstrap, topic, lambda key, value: None, after_poll=after_poll
    )
    await follower.start()
    try:
        await asyncio.wait_for(follower.failed.wait(), WAIT_S)
        assert not follower.loaded.is_set()
    finally:
        await follower.stop()


async def test_read_topic_returns_every_record_up_to_the_end_and_a_missing_topic_as_empty(
    broker: EmbeddedBroker, make_topic_name: Callable[[str], str]
) -> None:
    topic = make_topic_name("read")
    await create_topics(broker.bootstrap, {topic: TopicSpec(partitions=3)})
    # Multi-record batches: the embedded broker's reported ends lag behind them (true_ends).
    await produce_records(broker.bootstrap, topic, records(0, 300), one_record_batches=False)

    read = await asyncio.wait_for(read_topic(broker.bootstrap, topic, true_ends=True), WAIT_S)

    assert sorted(read) == sorted(records(0, 300))
    absent = make_topic_name("absent")
    assert await asyncio.wait_for(read_topic(broker.bootstrap, absent), WAIT_S) == []
