"""Size limits of the records the pipeline writes, and the splitting that keeps them within.

Kafka refuses a record larger than the broker's ``message.max.bytes`` (1 MB by default) and
aiokafka one larger than the producer's ``max_request_size`` (1 MB by default). Every record the
worker produces — facts batches, partial counts, dedup changelog chunks, dead letters — is kept
under ``MAX_RECORD_BYTES``, so the defaults of a standard Kafka need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

# Bytes of a record's value: room left for its key and the batch overhead under Kafka's 1,048,588.
MAX_RECORD_BYTES = 900_000
# Bytes of the original record a dead letter keeps (base64: 4/3 of it); more is cut and flagged.
DEAD_LETTER_RAW_BYTES = 256 * 1024
# Bytes of the original key a dead letter keeps as its own key.
DEAD_LETTER_KEY_BYTES = 1024
# Characters of a dead letter's error text.
DEAD_LETTER_ERROR_CHARS = 2000


class RecordTooLarge(ValueError):
    """One item alone does not fit a record: its producer must bound it."""


Item = TypeVar("Item")


def split_to_fit(
    items: Sequence[Item],
    encode: Callable[[Sequence[Item]], bytes],
    limit: int = MAX_RECORD_BYTES,
) -> list[bytes]:
    """``encode`` of consecutive runs of ``items``, each at most ``limit`` bytes.

    One encoding when it fits (the usual case); otherwise halves, recursively.
    """
    encoded = encode(items)
    if len(encoded) <= limit:
        return [encoded]
    if len(items) <= 1:
        raise RecordTooLarge(f"one item of {len(encoded)} bytes exceeds {limit}")
    middle = len(items) // 2
    return split_to_fit(items[:middle], encode, limit) + split_to_fit(items[middle:], encode, limit)


def json_chunks(items: Sequence[Any], limit: int = MAX_RECORD_BYTES) -> list[bytes]:
    """``items`` as JSON arrays of consecutive items, each at most ``limit`` bytes."""
    return split_to_fit(items, orjson.dumps, limit)


def dict_chunks(
    items: dict[str, Any], limit: int = MAX_RECORD_BYTES, overhead: int = 0
) -> list[dict[str, Any]]:
    """``items`` as dicts whose JSON is at most ``limit - overhead`` bytes (the overhead being
    what the record wraps around it)."""
    if len(orjson.dumps(items)) <= limit - overhead:
        return [items]
    if len(items) <= 1:
        raise RecordTooLarge(f"one entry exceeds {limit - overhead} bytes")
    keys = list(items)
    middle = len(keys) // 2
    return [
        *dict_chunks({k: items[k] for k in keys[:middle]}, limit, overhead),
        *dict_chunks({k: items[k] for k in keys[middle:]}, limit, overhead),
    ]
