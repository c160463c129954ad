"""What a result in ClickHouse's Native format will cost as Python values, read from its bytes
before any value is made (``streams/store/analyst_query.py`` refuses a result over its cap first).

The cost is the one ``Store.query`` has always counted (docs/security.md, "Limits"): 8 bytes a
scalar, ``len + 1`` a string, 8 for each array, tuple or map plus its elements. ClickHouse's own
``max_result_bytes`` counts a date as 2 bytes and a constant column as one value, but a Python
``date`` takes about 40: 16 million dates in one array passed it and took a gigabyte to convert.

Native (as sent without a client protocol version, by chDB and an HTTP server alike): blocks of
``columns, rows`` (LEB128), then per column its name, its type and its data. Types whose layout is
not walked here (Variant, Dynamic, JSON, geo, aggregate states) end the walk: every byte from there
to the end is counted as a value of its own (8), so such results are capped at an eighth of the
bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.datatypes import registry
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.container import Array, Map, Nested, Tuple
from clickhouse_connect.datatypes.string import FixedString, String

VALUE_COST = 8  # a scalar, a None, or the container of an array, tuple or map


class NotWalked(Exception):
    """A type whose Native layout is not walked here."""


class Incomplete(Exception):
    """The bytes end inside a block (more are coming, or the result is cut short)."""


@dataclass
class Walk:
    """The blocks of ``data`` walked so far: ``end`` is where the last whole block ends."""

    cost: int = 0
    end: int = 0
    tried: int = 0  # how far the bytes reached when a block was last found cut short
    columns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


def walk_blocks(data: bytes | bytearray, walk: Walk, cap: int, *, final: bool = False) -> None:
    """Walk the whole blocks of ``data`` after ``walk.end``, adding their cost, until the cost
    passes ``cap`` or the bytes end. A block cut short counts what it is known to cost already
    (an array's length comes before its elements, so 16 million dates are over the cap after 8
    bytes); it is walked again once the bytes after ``walk.end`` have doubled (a large block is not
    walked again at every chunk), or when ``final``."""
    if not final and len(data) - walk.end < 2 * (walk.tried - walk.end):
        return
    view = memoryview(data)
    while walk.end < len(view) and walk.cost <= cap:
        reader = _Reader(view, walk.end, cap - walk.cost)
        try:
            columns, types = reader.block()
        except Incomplete:
            walk.tried = len(view)
            if reader.over:
                walk.cost += reader.cost
            return
        except NotWalked:
            walk.cost += VALUE_COST * (len(view) - walk.end)
            walk.end = len(view)
            return
        walk.cost += reader.cost
        walk.end = reader.pos
        if not walk.columns:
            walk.columns, walk.types = columns, types


class _Reader:
    """One block's walk from ``pos``; ``cost`` so far, and ``over`` once it passes ``budget``
    (the rest need not be walked then)."""

    def __init__(self, view: memoryview, pos: int, budget: int) -> None:
        self.view, self.pos, self.budget, self.cost = view, pos, budget, 0

    @property
    def over(self) -> bool:
        return self.cost > self.budget

    def add(self, cost: int) -> None:
        self.cost += cost

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if end > len(self.view):
            raise Incomplete
        chunk = self.view[self.pos : end]
        self.pos = end
        return chunk

    def leb128(self) -> int:
        value = shift = 0
        view, pos = self.view, self.pos
        while True:
            if pos >= len(view):
                raise Incomplete
            byte = view[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7

    def uint64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def text(self) -> str:
        return bytes(self.take(self.leb128())).decode("utf-8", errors="replace")

    def block(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        columns, rows = self.leb128(), self.leb128()
        names, types = [], []
        for _ in range(columns):
            names.append(self.text())
            type_name = self.text()
            types.append(type_name)
            if rows:
                column_type = registry.get_from_name(type_name)
                self.prefix(column_type)
                self.data(column_type, rows)
                if self.over:
                    break  # over the cap: the rest of the block need not be walked
        return tuple(names), tuple(types)

    # Serialisation state prefixes come before a column's data: LowCardinality's key version,
    # also when it is nested (Array(LowCardinality(String)) writes it before the offsets).
    def prefix(self, column_type: ClickHouseType) -> None:
        if column_type.low_card:
            self.take(8)
        elif isinstance(column_type, Map):
            self.prefix(column_type.key_type)
            self.prefix(column_type.value_type)
        elif isinstance(column_type, Array):
            self.prefix(column_type.element_type)
        elif isinstance(column_type, Tuple | Nested):
            for element in column_type.element_types:
                self.prefix(element)

    def data(self, column_type: ClickHouseType, rows: int) -> None:
        """Walk ``rows`` values, adding their cost (before their bytes are there, when it is
        known from the count); stops early once over the budget."""
        if self.over:
            return
        name = column_type.name
        if column_type.low_card:
            self.low_cardinality(name, rows)
        elif name.startswith("Nullable("):
            self.take(rows)  # the null map
            self.data(registry.get_from_name(name[len("Nullable(") : -1]), rows)
        elif isinstance(column_type, Map):
            self.add(VALUE_COST * rows)
            total = self.offsets(rows)
            self.data(column_type.key_type, total)
            self.data(column_type.value_type, total)
        elif isinstance(column_type, Nested):  # Array(Tuple(...))
            self.add(VALUE_COST * rows)
            self.tuple_data(column_type.element_types, self.offsets(rows))
        elif isinstance(column_type, Array):
            self.add(VALUE_COST * rows)
            self.data(column_type.element_type, self.offsets(rows))
        elif isinstance(column_type, Tuple):
            self.tuple_data(column_type.element_types, rows)
        elif isinstance(column_type, String):
            self.strings(rows)
        elif isinstance(column_type, FixedString):
            self.add((column_type.byte_size + 1) * rows)
            self.take(column_type.byte_size * rows)
        elif column_type.byte_size > 0:  # a fixed-width scalar (Nothing is 1 byte a value)
            self.add(VALUE_COST * rows)
            if not self.over:
                self.take(column_type.byte_size * rows)
        else:
            raise NotWalked(name)

    def tuple_data(self, elements: tuple[ClickHouseType, ...], rows: int) -> None:
        self.add(VALUE_COST * rows)
        for element in elements:
            self.data(element, rows)

    def offsets(self, rows: int) -> int:
        """Skip an array column's offsets; the number of its elements (the last offset)."""
        chunk = self.take(8 * rows)
        return int.from_bytes(chunk[-8:], "little")

    def strings(self, rows: int) -> None:
        # The hot loop of a walk: the LEB128 lengths are read inline.
        view, pos, cost, budget = self.view, self.pos, self.cost, self.budget
        try:
            for _ in range(rows):
                size = view[pos]
                pos += 1
                if size >= 0x80:
                    size &= 0x7F
                    shift = 7
                    while True:
                        byte = view[pos]
                        pos += 1
                        size |= (byte & 0x7F) << shift
                        if byte < 0x80:
                            break
                        shift += 7
                pos += size
                cost += size + 1
                if cost > budget:
                    break  # over: the rest of the block need not be walked
        except IndexError:
            self.cost = cost
            raise Incomplete from None
        self.cost = cost
        if pos > len(view) and not self.over:
            raise Incomplete
        self.pos = min(pos, len(view))

    def low_cardinality(self, name: str, rows: int) -> None:
        """A dictionary of distinct values (made once each), then one index per row."""
        flags = self.uint64()
        values = self.uint64()
        inner = name[len("LowCardinality(") : -1]
        if inner.startswith("Nullable("):  # the dictionary holds the values, NULL at index 0
            inner = inner[len("Nullable(") : -1]
        self.data(registry.get_from_name(inner), values)
        keys = self.uint64()
        self.add(VALUE_COST * max(keys, rows))
        self.take((1 << (flags & 0xFF)) * keys)
