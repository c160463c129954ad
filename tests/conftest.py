"""Fixtures shared by every test: the embedded broker and unique topic names.

Tests under tests/integration/ are marked `integration` here by location, so
`pytest -m "not integration"` runs only the pure unit tests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.dev.broker import EmbeddedBroker

INTEGRATION_DIR = Path(__file__).parent / "integration"
# Kafka topic names allow [a-zA-Z0-9._-] and at most 249 characters.
_TOPIC_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")
_TOPIC_STEM_CHARS = 80


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the whole session, on a free loopback port.

    A broker that cannot start fails the tests that use it (an error, never a skip).
    """
    with EmbeddedBroker() as started:
        yield started


@pytest.fixture
def make_topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Return a function giving topic names unique to this test run: `<test>-<label>-<random>`.

    The session shares one broker, so every test needs topics no other test writes to.
    """
    stem = _TOPIC_UNSAFE.sub("-", request.node.name)[:_TOPIC_STEM_CHARS].strip("-")

    def make(label: str = "topic") -> str:
        return f"{stem}-{_TOPIC_UNSAFE.sub('-', label)}-{uuid.uuid4().hex[:8]}"

    return make
