"""The profile table a peer starts from, loaded by the worker's own loader (``ProfileBook``), so
that every peer enriches with exactly the pipeline's profiles. Not for Bytewax, whose environment
has no ``mode``: it reads profiles with a dataflow of its own."""

from __future__ import annotations

from streams.pipeline.enrich import Profile
from streams.settings import TOPIC_PROFILES, Settings
from streams.worker.profiles import ProfileBook


async def load_profiles(settings: Settings) -> dict[str, Profile]:
    book = ProfileBook(
        settings.kafka_bootstrap,
        TOPIC_PROFILES,
        settings.zone,
        settings.max_event_bytes,
        settings.kafka_client_kwargs(),
    )
    await book.start()
    try:
        await book.wait_loaded()
    finally:
        await book.stop()
    return book.profiles
