"""Records of the sink's topics → rows of the ClickHouse tables (pure: no Kafka, no store).

Rows per record:

* a ``cci-updates`` value → one ``cci_segment_monthly`` row (version = the record's version);
* a dedup changelog chunk (key ``YYYY-MM@offset``, value ``{"seq", "a": [[user_id, ts, attrs]],
  "t": [[ticket_id, ts, attrs + [channel], user_id]]}``) → ``cci_monthly_active_users`` and
  ``cci_tickets`` rows. A chunk holds the winners at the time it was written; a later chunk for
  the same user-month or ticket always has an earlier (or equal) time, so the version
  ``2^63 - ts`` makes FINAL keep the stream's winner in whatever order chunks are written.
  Tombstones (expired months) are skipped: ClickHouse keeps history. A chunk of this shape is
  validated here and inserted whole, as one ``cci_changelog_chunks`` row whose materialized
  views make those rows (schemas/clickhouse/006); one of another shape (tickets written before
  they carried their user) becomes rows here.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any

import msgspec
import orjson

from streams import domain

SEGMENT_TABLE = "cci_segment_monthly"
ACTIVE_TABLE = "cci_monthly_active_users"
TICKET_TABLE = "cci_tickets"
OFFSETS_TABLE = "cci_sink_offsets"  # per group and partition: what the store holds
CHUNKS_TABLE = "cci_changelog_chunks"  # a Null table: its views write ACTIVE_ and TICKET_TABLE
CHUNKS_COLUMNS = ("month", "dimensions", "users", "tickets", "body")
OFFSETS_COLUMNS = ("group_id", "topic", "partition", "next_offset")
SEGMENT_COLUMNS = (
    "month",
    "dimension",
    "segment",
    "tickets",
    "active_users",
    "cci",
    "contact_rate_pct",
    "version",
    "updated_at",
    "band",
)
SEGMENT_COLUMN_NAMES = ("plan", "product", "region", "tenure")
ACTIVE_COLUMNS = ("month", "user_id", "active_at", *SEGMENT_COLUMN_NAMES, "extra", "version")
TICKET_COLUMNS = (
    "ticket_id",
    "user_id",
    "month",
    "created_at",
    "channel",
    *SEGMENT_COLUMN_NAMES,
    "extra",
    "version",
)
COLUMNS = {
    SEGMENT_TABLE: SEGMENT_COLUMNS,
    ACTIVE_TABLE: ACTIVE_COLUMNS,
    TICKET_TABLE: TICKET_COLUMNS,
    OFFSETS_TABLE: OFFSETS_COLUMNS,
    CHUNKS_TABLE: CHUNKS_COLUMNS,
}
# Versions of facts count time backwards from here, so the earliest event has the highest one.
VERSION_BASE = 1 << 63


def segment_row(value: bytes) -> list[Any]:
    """The ``cci_segment_monthly`` row of one ``cci-updates`` value."""
    record = orjson.loads(value)
    return [
        domain.month_start(domain.month_from_label(record["month"])),
        record["dimension"],
        record["segment"],
        record["tickets"],
        record["active_users"],
        record["cci"],
        record["contact_rate_pct"],
        record["version"],
        datetime.fromisoformat(record["emitted_at"]),
        record.get("band"),  # records written before the band was added have none: NULL
    ]


# An event time ClickHouse's views can count back from 2^63 in an Int64 (µs: ±146,000 years).
EventMicros = Annotated[int, msgspec.Meta(gt=-(1 << 62), lt=1 << 62)]


class _Chunk(msgspec.Struct):
    """A changelog chunk as the views of ``CHUNKS_TABLE`` read it (``seq`` is not needed)."""

    a: list[tuple[str, EventMicros, list[str]]]
    t: list[tuple[str, EventMicros, list[str], str]]


_decode_chunk = msgspec.json.Decoder(_Chunk).decode

NO_EXTRAS: dict[str, str] = {}  # never mutated: shared by every row without extra dimensions
ATTRIBUTES = operator.itemgetter(2)  # of a chunk's active or ticket row


class FactRows:
    """Rows of dedup changelog chunks, for the worker's dimensions (attribute order:
    ``domain.user_dimensions``: plan, product, region, extras…, tenure; tickets add the channel)."""

    def __init__(self, dimensions: Sequence[str]) -> None:
        self.dimensions = tuple(dimensions)
        self._dimension_list = list(self.dimensions)  # shared by every chunk row
        self._named = operator.itemgetter(
            *[self.dimensions.index(name) for name in SEGMENT_COLUMN_NAMES]
        )
        self._extras = [
            (i, name) for i, name in enumerate(self.dimensions) if name not in SEGMENT_COLUMN_NAMES
        ]
        # Without extra dimensions the attributes are the segment columns in order: a row is
        # built in one expression (a call per row was ~40% of turning a chunk into rows).
        self._plain = self.dimensions == SEGMENT_COLUMN_NAMES

    def _segments(self, attributes: Sequence[str], width: int) -> list[Any]:
        if len(attributes) != width:
            raise ValueError(
                f"{len(attributes)} attributes where {width} were expected: was the changelog "
                f"written with other CCI_EXTRA_DIMENSIONS than {self.dimensions}?"
            )
        # Runs once per row: the common case without extra dimensions shares one empty map.
        extras = {name: attributes[i] for i, name in self._extras} if self._extras else NO_EXTRAS
        return [*self._named(attributes), extras]

    def chunk_row(self, key: bytes, value: bytes) -> list[Any] | None:
        """The ``CHUNKS_TABLE`` row of one chunk, validated: every field of the type the views
        read and as many attributes as the dimensions; None for a chunk of another shape (its
        rows come from ``chunk_rows``, which says what is wrong with it, if anything)."""
        try:
            chunk = _decode_chunk(value)
        except msgspec.ValidationError:
            return None  # msgspec.DecodeError (not JSON at all) is a ValueError: skipped
        width = len(self.dimensions)
        if set(map(len, map(ATTRIBUTES, chunk.a))) - {width} or set(
            map(len, map(ATTRIBUTES, chunk.t))
        ) - {width + 1}:
            return None
        label, _, _ = key.decode("utf-8").partition("@")
        month = domain.month_start(domain.month_from_label(label))
        return [month, self._dimension_list, len(chunk.a), len(chunk.t), value]

    def chunk_rows(self, key: bytes, value: bytes) -> tuple[list[list[Any]], list[list[Any]]]:
        """(active-user rows, ticket rows) of one chunk."""
        label, _, _ = key.decode("utf-8").partition("@")
        month = domain.month_start(domain.month_from_label(label))
        chunk = orjson.loads(value)
        width = len(self.dimensions)
        if self._plain:
            return self._plain_rows(month, chunk, width)
        users = [
            [month, user_id, ts, *self._segments(attributes, width), VERSION_BASE - ts]
            for user_id, ts, attributes in chunk["a"]
        ]
        tickets = [
            [
                ticket_id,
                user[0] if user else "",
                month,
                ts,
                attributes[-1],
                *self._segments(attributes[:-1], width),
                VERSION_BASE - ts,
            ]
            for ticket_id, ts, attributes, *user in chunk["t"]
        ]
        return users, tickets

    def _plain_rows(
        self, month: date, chunk: dict[str, Any], width: int
    ) -> tuple[list[list[Any]], list[list[Any]]]:
        """``chunk_rows`` without extra dimensions: the widths checked once per chunk, in C."""
        active_rows, ticket_rows = chunk["a"], chunk["t"]
        for rows, expected in ((active_rows, width), (ticket_rows, width + 1)):
            widths = set(map(len, map(ATTRIBUTES, rows)))
            if widths - {expected}:
                self._segments(next(r[2] for r in rows if len(r[2]) != expected), expected)
        users = [
            [month, user_id, ts, *attributes, NO_EXTRAS, VERSION_BASE - ts]
            for user_id, ts, attributes in active_rows
        ]
        tickets = [
            [
                ticket_id,
                user[0] if user else "",
                month,
                ts,
                attributes[4],
                attributes[0],
                attributes[1],
                attributes[2],
                attributes[3],
                NO_EXTRAS,
                VERSION_BASE - ts,
            ]
            for ticket_id, ts, attributes, *user in ticket_rows
        ]
        return users, tickets
