"""How analysts see a query's result: an aligned table for people, ``jsonl`` or ``csv`` for
programs (exact values), and the monthly CCI report of ``cci report``. Running the SQL is
``streams/store/query.py``'s."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import orjson

from streams import domain
from streams.store.analyst_query import QueryResult

FORMATS = ("table", "jsonl", "csv")


# --- tables --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]
) -> str:
    """Aligned plain-text columns: numbers to the right, text to the left."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


_NUMERIC_TYPE = ("Int", "UInt", "Float", "Decimal")


def _is_numeric(type_name: str) -> bool:
    bare = type_name.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return bare.startswith(_NUMERIC_TYPE)


def format_result(result: QueryResult, fmt: str) -> str:
    """The result as ``table`` (for people), ``jsonl`` or ``csv`` (for programs; exact values)."""
    if fmt == "jsonl":
        return "\n".join(
            orjson.dumps(dict(zip(result.columns, row, strict=True))).decode()
            for row in result.rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow(
                "" if v is None else orjson.dumps(v).decode() if isinstance(v, dict | list) else v
                for v in row
            )
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    rows = [[_cell(v) for v in row] for row in result.rows]
    table = render_table(result.columns, rows, [_is_numeric(t) for t in result.types])
    return f"{table}\n({len(rows)} row{'' if len(rows) == 1 else 's'})"


# --- the report ----------------------------------------------------------------------------------

REPORT_SQL = """
SELECT month, dimension, segment, tickets, active_users, cci, contact_rate_pct, band,
       previous_cci, cci_change, cci_change_pct
FROM cci_segment_trend
WHERE month = if({month:String} = '',
                 (SELECT max(month) FROM cci_segment_monthly),
                 toDate(concat({month:String}, '-01')))
  AND ({dimension:String} = '' OR dimension = {dimension:String})
"""


def report_parameters(month: str | None, dimension: str | None) -> dict[str, str]:
    if month:
        domain.month_from_label(month)  # ValueError names the bad value
    return {"month": month or "", "dimension": dimension or ""}


def _dimension_order(dimension: str) -> tuple[int, str]:
    known = (domain.ALL, *domain.PROFILE_DIMENSIONS)
    if dimension in known:
        return known.index(dimension), ""
    if dimension == domain.TENURE:
        return 90, ""
    if dimension == domain.CHANNEL:
        return 91, ""
    return 50, dimension  # extra dimensions, by name


def _segment_order(dimension: str, segment: str) -> tuple[int, str]:
    if dimension == domain.TENURE and segment in domain.TENURE_BUCKETS:
        return domain.TENURE_BUCKETS.index(segment), ""
    return (99 if segment == domain.UNKNOWN else 50), segment


def _signed(value: float | None, digits: int, suffix: str = "") -> str:
    return "" if value is None else f"{value:+.{digits}f}{suffix}"


def render_report(result: QueryResult) -> str:
    """The report query's rows as a terminal table, grouped by dimension."""
    if not result.rows:
        return "no figures for that month (yet)"
    records = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    month = str(records[0]["month"])[:7]
    previous = domain.month_label(domain.month_from_label(month) - 1)
    records.sort(
        key=lambda r: (
            _dimension_order(r["dimension"]),
            _segment_order(r["dimension"], r["segment"]),
        )
    )
    headers = [
        "dimension",
        "segment",
        "tickets",
        "active users",
        "CCI",
        "contact %",
        "band",
        f"CCI {previous}",
        "change",
        "change %",
    ]
    rows: list[list[str]] = []
    last_dimension = None
    for r in records:
        if last_dimension is not None and r["dimension"] != last_dimension:
            rows.append([""] * len(headers))
        last_dimension = r["dimension"]
        rows.append(
            [
                r["dimension"],
                r["segment"],
                str(r["tickets"]),
                str(r["active_users"]),
                "-" if r["cci"] is None else f"{r['cci']:.4f}",
                "-" if r["contact_rate_pct"] is None else f"{r['contact_rate_pct']:.2f}",
                r.get("band") or "-",
                "" if r["previous_cci"] is None else f"{r['previous_cci']:.4f}",
                _signed(r["cci_change"], 4),
                _signed(r["cci_change_pct"], 1, "%"),
            ]
        )
    numeric = [False, False, True, True, True, True, False, True, True, True]
    title = f"Customer Contact Index, {month} (change from {previous})"
    return f"{title}\n\n{render_table(headers, rows, numeric)}"
