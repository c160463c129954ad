"""The user-profile table: every profile, fully loaded before any event is enriched.

Each worker reads the whole compacted ``user-profile`` topic (all partitions, no consumer group) up
to the end offsets it finds at start, then keeps following it (``streams/kafka/follow.py``). Invalid
profiles are logged and counted; they cannot be dead-lettered from here without racing the ingest
agent's offsets, and a later valid profile replaces them anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from mode import Service

from streams.kafka.follow import TopicFollower
from streams.pipeline.enrich import Profile, newer_profile, profile_from_event
from streams.pipeline.validate import MAX_SEGMENT_CHARS, InvalidEvent, parse_profile

log = logging.getLogger(__name__)

UNPROCESSABLE = "unprocessable"  # invalid-profile reason: valid, yet it could not be applied


class ProfileBook(Service):
    """user_id → newest valid Profile, loaded from the profile topic (its follower is a
    dependency: started and stopped with it)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        zone: ZoneInfo,
        max_event_bytes: int,
        client_kwargs: dict[str, Any] | None = None,
        on_invalid: Callable[[str], None] | None = None,
        max_segment_chars: int = MAX_SEGMENT_CHARS,
    ) -> None:
        super().__init__()
        self.zone = zone
        self.max_event_bytes = max_event_bytes
        self.max_segment_chars = max_segment_chars
        self.on_invalid = on_invalid
        self.profiles: dict[str, Profile] = {}
        # The profile of a user, or None: the dict's own get, called once per event (a method
        # around it would add a Python call to each).
        self.get: Callable[[str], Profile | None] = self.profiles.get
        self.follower = self.add_dependency(
            TopicFollower(
                bootstrap, topic, self.apply, client_kwargs, on_apply_error=self._unprocessable
            )
        )
        self.loaded = self.follower.loaded

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            # A tombstone deletes the profile (compacted-topic convention).
            if key is not None:
                self.profiles.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            event = parse_profile(value, self.max_event_bytes, self.max_segment_chars)
        except InvalidEvent as exc:
            log.warning("invalid profile ignored: %s", exc)
            if self.on_invalid:
                self.on_invalid(exc.reason)
            return
        profile = profile_from_event(event, self.zone)
        self.profiles[event.user_id] = newer_profile(self.profiles.get(event.user_id), profile)

    def _unprocessable(self, _error: Exception) -> None:
        # Validation missed something that profile_from_event could not handle (the follower has
        # logged it): the record counts as an invalid profile, and the next ones are applied.
        if self.on_invalid:
            self.on_invalid(UNPROCESSABLE)

    async def wait_loaded(self) -> None:
        await self.loaded.wait()
