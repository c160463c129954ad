"""Idempotent topic creation for `cci topics create` and the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

SEVEN_DAYS_MS = 7 * 24 * 60 * 60 * 1000
# Sent with every topic: the embedded broker reports no configs at all for a topic created
# without them, and readers of DescribeConfigs (Faust among them) then see an empty answer.
BASE_TOPIC_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(SEVEN_DAYS_MS),
}
METADATA_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one topic is created; `configs` override BASE_TOPIC_CONFIGS key by key."""

    partitions: int = 1
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)

    def effective_configs(self) -> dict[str, str]:
        return {**BASE_TOPIC_CONFIGS, **self.configs}


@dataclass(frozen=True, slots=True)
class CreateTopicsResult:
    """Which of the requested topics this call created and which were there already."""

    created: tuple[str, ...]
    existing: tuple[str, ...]


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic for a reason other than its existence."""


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, TopicSpec],
    *,
    client_kwargs: Mapping[str, Any] | None = None,
    metadata_wait_s: float = METADATA_WAIT_S,
) -> CreateTopicsResult:
    """Create every topic in `topics` that does not exist yet; existing ones are left as they are.

    `client_kwargs` go to AIOKafkaAdminClient unchanged (security_protocol, ssl_context,
    sasl_* …). Returns once every requested topic appears in the broker's metadata, so a
    consumer started right after sees them.
    """
    if not topics:
        return CreateTopicsResult(created=(), existing=())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **dict(client_kwargs or {}))
    await admin.start()
    try:
        new_topics = [
            NewTopic(
                name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                topic_configs=spec.effective_configs(),
            )
            for name, spec in topics.items()
        ]
        # Asking to create everything and reading per-topic errors is free of the race a
        # list-then-create approach has with a concurrent `cci topics create`.
        response = await admin.create_topics(new_topics)
        created: list[str] = []
        existing: list[str] = []
        failures: list[str] = []
        for name, error_code, error_message in _topic_errors(response):
            if error_code == 0:
                created.append(name)
            elif error_code == TopicAlreadyExistsError.errno:
                existing.append(name)
            else:
                reason = error_message or for_code(error_code).__name__
                failures.append(f"{name}: {reason} (error code {error_code})")
        if failures:
            raise TopicCreationError("could not create topics: " + "; ".join(failures))
        await _wait_for_metadata(admin, set(topics), metadata_wait_s)
    finally:
        await admin.close()
    return CreateTopicsResult(created=tuple(sorted(created)), existing=tuple(sorted(existing)))


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    # CreateTopicsResponse v0 has no error messages; later versions carry (name, code, message).
    return [
        (entry[0], entry[1], entry[2] if len(entry) > 2 else None)
        for entry in response.topic_errors
    ]


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: set[str], wait_s: float) -> None:
    # A multi-broker Kafka acknowledges creation before every broker's metadata has the topic.
    deadline = time.monotonic() + wait_s
    while True:
        missing = names - set(await admin.list_topics())
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TopicCreationError(
                f"topics not in the broker's metadata after {wait_s:.0f} s: {sorted(missing)}"
            )
        await asyncio.sleep(0.2)
