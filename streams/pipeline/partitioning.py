"""Which partition of the internal topics a key goes to: pure, shared by ingest, the worker and
the reference recount (the cardinality guard is per facts partition)."""

from __future__ import annotations

import zlib


def partition_for(key: str, partitions: int) -> int:
    """Partition of a key on the internal topics (facts by user or ticket id, partials by month).

    Only this pipeline writes those topics, so it need not be Kafka's murmur2, which aiokafka
    computes in pure Python (a quarter of the ingest stage, docs/performance.md); CRC-32 is in C.
    """
    return zlib.crc32(key.encode("utf-8")) % partitions
