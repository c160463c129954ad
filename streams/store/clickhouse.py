"""The one seam to ClickHouse: the embedded chDB engine (``chdb://PATH``) or a server
(``http(s)://user:pass@host:port/db``), behind one clickhouse-connect client API.

Everything that touches ClickHouse goes through ``Store``: the versioned DDL in
``schemas/clickhouse/``, batched inserts (values travel as column data, never as SQL text), and
read-only queries. A chDB engine belongs to one process, so while a worker runs, other processes
reach its store through the worker's web server (see ``streams/store/query.py``).

Analysts' queries (``Store.query``) are read-only by the engine, bounded, and isolated from each
other (docs/security.md, "Query API"):

- each runs on a client of its own, opened for it and closed after: no session state (``SET``,
  ``USE``, a half-read result) passes from one query to the next, and no lock makes one wait for
  another; at most ``QUERY_SLOTS`` run at once in a process, a further one is refused (busy);
- the client's session carries ``ANALYST_LIMITS`` and then ``readonly = 1``: ClickHouse refuses
  writes, DDL, ``SET``, external table functions and any change of those limits;
- before it runs, the statement is parsed by ClickHouse (``formatQuerySingleLine``: exactly one
  statement) and its ``EXPLAIN AST`` judged by ``streams/store/query_policy.py``; the canonical text
  that was judged is what runs;
- ``cancel`` kills it by its tag (``log_comment``), e.g. when the asker went away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import clickhouse_connect
from clickhouse_connect.driver.binding import bind_query
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.ctypes import RespBuffCls
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform

from streams.redaction import redact_url
from streams.store import native_cost, query_policy
from streams.store.errors import QueryRefused, StoreBusy, StoreError
from streams.store.schema import (
    MIGRATIONS_TABLE,
    SCHEMA_DIR,
    check_cluster_name,
    load_migrations,
    migration_statements,
    migrations_table_ddl,
)

log = logging.getLogger("streams.store.clickhouse")

QUERY_SECONDS = 300  # longest a read-only query may run
QUERY_MEMORY_BYTES = 256 * 1024 * 1024  # most memory one analyst query may take in the engine
QUERY_RESULT_ROWS = 100_000  # most rows a query may return (more is an error: add a LIMIT)
QUERY_RESULT_BYTES = 32 * 1024 * 1024  # most bytes a query may return, uncompressed
QUERY_THREADS = 2  # threads one analyst query may use
QUERY_BLOCK_ROWS = 8192  # rows per result block: the result is counted block by block
QUERY_SLOTS = 2  # ad hoc analyst queries running at once in one process
# /api/forecast's queries at once, apart from the ad hoc ones, so that neither kind can starve the
# other; (sum of BUDGET_SLOTS) x QUERY_MEMORY_BYTES is the most all reads may take in the engine.
FORECAST_QUERY_SLOTS = 2
# The sink's own reads (the offsets the store holds, once per assignment): never kept waiting,
# and failing, because analysts hold every ad hoc slot.
SINK_QUERY_SLOTS = 1
QueryBudget = Literal["ad hoc", "forecast", "sink"]
BUDGET_SLOTS: dict[QueryBudget, int] = {
    "ad hoc": QUERY_SLOTS,
    "forecast": FORECAST_QUERY_SLOTS,
    "sink": SINK_QUERY_SLOTS,
}
# Applied in this order, then log_comment (the query's tag) and readonly = 1 last: once readonly
# is set, no setting can change, so a query's own SETTINGS clause cannot lift these.
ANALYST_LIMITS: dict[str, Any] = {
    "max_memory_usage": QUERY_MEMORY_BYTES,
    "max_result_rows": QUERY_RESULT_ROWS,
    "max_result_bytes": QUERY_RESULT_BYTES,
    "result_overflow_mode": "throw",
    "max_execution_time": QUERY_SECONDS,
    "max_threads": QUERY_THREADS,
    "max_block_size": QUERY_BLOCK_ROWS,
    "allow_introspection_functions": 0,  # addressToSymbol & co. read the process's memory map
}
ClientFactory = Callable[..., Client]


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def embedded_path(url: str) -> Path | None:
    """The data directory of a ``chdb://PATH`` URL (relative paths from the working directory);
    None for a server URL."""
    if not url.startswith("chdb://"):
        return None
    location = url.removeprefix("chdb://")
    if not location or location in {"memory", ":memory:"}:
        raise StoreError(
            f"{url}: the embedded store needs a directory, e.g. chdb://.cci/clickhouse"
        )
    return Path(location).expanduser().resolve()


class Store:
    """A ClickHouse database: schema, inserts and queries. Methods block; call them from a thread
    (``asyncio.to_thread``) in async code."""

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        cluster: str = "",
        client_factory: ClientFactory = clickhouse_connect.get_client,
    ) -> None:
        self.url = url
        self.path = embedded_path(url)
        if cluster and self.path is not None:
            raise StoreError("the embedded store (chdb://) is one node: it has no cluster")
        self.cluster = check_cluster_name(cluster) if cluster else ""
        self._database = database
        self._factory = client_factory
        # The writer is used by one thread at a time: a chDB handle serialises calls anyway, and
        # a server refuses two concurrent queries in one HTTP session. Analysts' queries each get
        # a client of their own (see the module docstring).
        self._writer: Client | None = None
        self._write_lock = threading.Lock()
        self._query_slots: dict[QueryBudget, threading.BoundedSemaphore] = {
            budget: threading.BoundedSemaphore(count) for budget, count in BUDGET_SLOTS.items()
        }
        self._cancelled: set[str] = set()  # tags of running queries cancel() was asked to stop
        self._closed = False
        # (table, columns) → the writer's insert context, reused until an error or a schema
        # change. A new one per insert asked ClickHouse for the column types first, and it refers
        # to itself (a bound method), so it lived with its rows until a cyclic collection: those
        # rows were most of what full collections had to traverse. A reused context holds only
        # its last batch, freed when the next one replaces it.
        self._insert_contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}

    @property
    def embedded(self) -> bool:
        return self.path is not None

    def _client(self, analyst_tag: str | None = None) -> Client:
        """The writer's client, or with ``analyst_tag`` a read-only, bounded one for one query."""
        kwargs: dict[str, Any] = {}
        if self._database:
            kwargs["database"] = self._database
        if self.cluster and analyst_tag is None:
            # An insert into a Distributed table returns once every shard has written its rows
            # (not when they are queued on the node the worker reached), and a retried batch
            # reaches each shard as the same block, which the replicated table drops.
            kwargs["settings"] = {"insert_distributed_sync": 1}
        if analyst_tag is not None:
            session = {**ANALYST_LIMITS, "log_comment": analyst_tag}
            if self.path is None:
                kwargs["autogenerate_session_id"] = False  # no server session: no shared state
            else:
                # As on a server: "SELEC x" is a syntax error, not an implicit "SELECT SELEC AS x".
                session["implicit_select"] = 0
            kwargs["settings"] = {**session, "readonly": 1}
        if self.path is None:
            try:
                return self._factory(dsn=self.url, **kwargs)
            except ClickHouseError as exc:
                raise StoreError(str(exc)) from exc
        if analyst_tag is not None and self._writer is not None:
            # The store is open already (the writer opened it): nothing to explain, and fd 2 is
            # not held back while the worker logs.
            try:
                return self._factory(dsn=f"chdb://{self.path}", **kwargs)
            except ClickHouseError as exc:
                raise StoreError(str(exc)) from exc
        engine_output: list[str] = []
        try:
            with _stderr_copied_to(engine_output):
                return self._factory(dsn=f"chdb://{self.path}", **kwargs)
        except ClickHouseError as exc:
            raise StoreError(embedded_failure(self.path, str(exc), "".join(engine_output))) from exc

    def _writer_client(self) -> Client:
        if self._writer is None:
            self._writer = self._client()
        return self._writer

    # --- schema --------------------------------------------------------------------------------

    def apply_schema(self, directory: Path = SCHEMA_DIR) -> list[int]:
        """Apply the schema files not yet recorded in ``schema_migrations``; return their
        versions. Idempotent, and safe for two workers at once: every statement is
        ``IF NOT EXISTS`` and a version recorded twice collapses to one row."""
        migrations = load_migrations(directory)
        with self._write_lock:
            self._insert_contexts.clear()
            client = self._writer_client()
            try:
                client.command(migrations_table_ddl(self.cluster))
                recorded = {
                    int(version): checksum
                    for version, checksum in client.query(
                        f"SELECT version, checksum FROM {MIGRATIONS_TABLE} FINAL"
                    ).result_rows
                }
                applied = []
                for migration in migrations:
                    if migration.version in recorded:
                        if recorded[migration.version] != migration.checksum:
                            log.warning(
                                "schema file %s changed after it was applied; a change needs a "
                                "new file",
                                migration.name,
                            )
                        continue
                    for statement in migration_statements(migration, self.cluster):
                        client.command(statement)
                    row = [migration.version, migration.name, migration.checksum, datetime.now(UTC)]
                    client.insert(
                        MIGRATIONS_TABLE,
                        [row],
                        column_names=["version", "name", "checksum", "applied_at"],
                    )
                    applied.append(migration.version)
                    log.info("applied schema %s to %s", migration.name, redact_url(self.url))
            except ClickHouseError as exc:
                raise StoreError(str(exc)) from exc
        return applied

    # --- writing and reading -------------------------------------------------------------------

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> int:
        """Insert rows (one value per column, in ``columns`` order) as one block."""
        if not rows:
            return 0
        with self._write_lock:
            client = self._writer_client()
            key = (table, tuple(columns))
            try:
                context = self._insert_contexts.get(key)
                if context is None:
                    context = client.create_insert_context(table, column_names=list(columns))
                    self._insert_contexts[key] = context
                context.data = rows
                client.insert(context=context)
            except Exception as exc:
                self._insert_contexts.pop(key, None)
                if isinstance(exc, ClickHouseError):
                    raise StoreError(str(exc)) from exc
                raise
        return len(rows)

    def command(self, sql: str) -> None:
        """A statement that writes or changes the schema (maintenance, tests)."""
        with self._write_lock:
            self._insert_contexts.clear()  # the statement may change a table's columns
            try:
                self._writer_client().command(sql)
            except ClickHouseError as exc:
                raise StoreError(str(exc)) from exc

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        tag: str | None = None,
        budget: QueryBudget = "ad hoc",
    ) -> QueryResult:
        """Run one analyst statement (see the module docstring); ``{name:Type}`` placeholders take
        ``parameters``. ``tag`` names it for ``cancel``. QueryRefused before it runs when it may
        not; StoreBusy when the slots of its ``budget`` (BUDGET_SLOTS) are taken; StoreError
        with ClickHouse's message when ClickHouse refuses it or it breaks a limit."""
        if self._closed:
            raise StoreError("the store is closed")
        slots = self._query_slots[budget]
        if not slots.acquire(blocking=False):
            raise StoreBusy(
                f"{BUDGET_SLOTS[budget]} {budget} queries are running already; "
                "try again when one has finished"
            )
        tag = tag or f"cci-query-{uuid.uuid4()}"
        try:
            client = self._client(analyst_tag=tag)
            try:
                return _checked_query(
                    client, sql, dict(parameters or {}), lambda: tag in self._cancelled
                )
            finally:
                client.close()
        finally:
            self._cancelled.discard(tag)
            slots.release()

    def cancel(self, tag: str) -> None:
        """Stop the analyst query tagged ``tag`` (if it still runs); it fails as cancelled. Also
        when it has not reached the engine yet: it is stopped before it runs."""
        self._cancelled.add(tag)
        client = self._client(analyst_tag=f"cci-cancel-{uuid.uuid4()}")
        try:
            client.command(
                "KILL QUERY WHERE Settings['log_comment'] = {tag:String} ASYNC",
                parameters={"tag": tag},
            )
        except ClickHouseError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            client.close()

    def close(self) -> None:
        # Under the lock: an insert running in another thread finishes first.
        with self._write_lock:
            self._closed = True
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception:  # closing is best effort: the process may be going away
                    log.debug("error closing a ClickHouse client", exc_info=True)
            self._writer = None
            self._insert_contexts.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(
    url: str,
    *,
    read_only: bool = False,
    database: str | None = None,
    cluster: str = "",
    client_factory: ClientFactory = clickhouse_connect.get_client,
) -> Store:
    """A connected Store. ``read_only``: only the read-only client is opened, and an embedded
    store that is not there is an error rather than created (no worker ever wrote it)."""
    store = Store(url, database=database, cluster=cluster, client_factory=client_factory)
    if read_only and store.path is not None and not store.path.is_dir():
        raise StoreError(f"no embedded store at {store.path} (a worker creates it)")
    # Connect now, so a store that cannot be opened fails here with a clear message.
    if read_only:
        store._client(analyst_tag="cci-connect").close()
    else:
        store._writer_client()
    return store


_ENDS_IN_LIMIT_0 = re.compile(r"\bLIMIT\s+0\s*$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _checked_query(
    client: Client, sql: str, parameters: dict[str, Any], cancelled: Callable[[], bool]
) -> QueryResult:
    """Parse ``sql`` with ClickHouse, judge it (streams/store/query_policy.py), then run the text
    that
    was judged, with values bound by the engine (never pasted into the text)."""
    if not sql.strip():
        raise QueryRefused("empty query")
    try:
        # One statement or a syntax error (ClickHouse refuses "multi-statements" here). The text
        # travels as a value, so nothing in it runs.
        canonical = client.query(
            "SELECT formatQuerySingleLine({statement:String})", parameters={"statement": sql}
        ).result_rows[0][0]
    except ClickHouseError as exc:
        raise QueryRefused(str(exc)) from exc
    if parameters:
        # clickhouse-connect pastes values into a text without {name:Type} placeholders (client-
        # side binding): refuse that, so what runs is exactly the text that was judged.
        try:
            bound = bool(_PLACEHOLDER.search(canonical)) and (
                bind_query(canonical, parameters)[0] == canonical
            )
        except (ClickHouseError, TypeError, ValueError) as exc:  # a value it cannot bind
            raise QueryRefused(f"parameters: {exc}") from exc
        if not bound:
            raise QueryRefused("parameters need {name:Type} placeholders in the query")
    try:
        explain = f"EXPLAIN AST {canonical}"
        if _ENDS_IN_LIMIT_0.search(canonical):
            # clickhouse-connect takes a text ending in LIMIT 0 for a probe of column names (and
            # the EXPLAIN failed); with the FORMAT it would append written out, it is not.
            explain += "\nFORMAT Native"
        explained = client.query(explain, parameters=parameters or None)
    except ClickHouseError as exc:
        raise QueryRefused(str(exc)) from exc
    ast = _without_transport_format([row[0] for row in explained.result_rows])
    reason = query_policy.refusal(ast, canonical)
    if reason is not None:
        raise QueryRefused(f"refused: {reason}")
    if cancelled():
        raise StoreError(_CANCELLED)
    try:
        if ast.startswith("SelectWithUnionQuery"):
            return _bounded_result(client, canonical, parameters, cancelled)
        # SHOW TABLES, DESCRIBE, EXISTS: small answers, and chDB streams only SELECTs.
        result = client.query(canonical, parameters=parameters or None)
    except ClickHouseError as exc:
        raise StoreError(str(exc)) from exc
    except RuntimeError as exc:
        # chDB's streaming reports an engine error (e.g. FUNCTION_NOT_ALLOWED) as its own
        # ChdbError, a RuntimeError: the asker gets it like any other engine error.
        raise StoreError(str(exc)) from exc
    return QueryResult(
        tuple(result.column_names),
        tuple(t.name for t in result.column_types),
        [tuple(row) for row in result.result_rows],
    )


_CANCELLED = "the query was cancelled (QUERY_WAS_CANCELLED)"


def _bounded_result(
    client: Client, sql: str, parameters: dict[str, Any], cancelled: Callable[[], bool]
) -> QueryResult:
    """The rows, read as ClickHouse's Native bytes and stopped at QUERY_RESULT_BYTES before any
    Python value is made: as sent, and as Python values will cost (streams/store/native_cost.py).
    ClickHouse's own max_result_bytes counts a constant column (``repeat('x', 1000)``) as one
    value and a date as 2 bytes: 16 million dates in one array passed it and took a gigabyte of
    the process to convert before the old, per-block count refused them."""
    data = bytearray()
    walk = native_cost.Walk()
    with contextlib.closing(
        client.raw_stream(sql, parameters=parameters or None, fmt="Native")
    ) as stream:
        while chunk := stream.read(RESULT_CHUNK_BYTES):
            if cancelled():
                raise StoreError(_CANCELLED)
            data += chunk
            native_cost.walk_blocks(data, walk, QUERY_RESULT_BYTES)
            if len(data) > QUERY_RESULT_BYTES or walk.cost > QUERY_RESULT_BYTES:
                raise StoreError(_TOO_BIG)
    native_cost.walk_blocks(data, walk, QUERY_RESULT_BYTES, final=True)
    if walk.cost > QUERY_RESULT_BYTES:
        raise StoreError(_TOO_BIG)
    if walk.end != len(data):
        # An HTTP server reports an error met while sending after the rows it sent.
        tail = bytes(data[walk.end :][-4096:]).decode("utf-8", errors="replace")
        found = tail.find("Code: ")
        raise StoreError(tail[found:].strip() if found >= 0 else "the result was cut short")
    if not data:
        # chDB sends no block at all for an empty result: its columns come from DESCRIBE, which
        # does not run the statement.
        described = client.query(f"DESCRIBE TABLE ({sql})", parameters=parameters or None)
        return QueryResult(
            tuple(str(row[0]) for row in described.result_rows),
            tuple(str(row[1]) for row in described.result_rows),
            [],
        )
    context = client.create_query_context(query=sql, parameters=parameters or None)
    result = NativeTransform.parse_response(RespBuffCls(_Bytes(bytes(data))), context)
    return QueryResult(
        tuple(result.column_names),
        tuple(t.name for t in result.column_types),
        [tuple(row) for row in result.result_rows],
    )


RESULT_CHUNK_BYTES = 1 << 20
_TOO_BIG = (
    f"Limit for result exceeded, max bytes: {QUERY_RESULT_BYTES / 2**20:.2f} MiB "
    "(TOO_MANY_ROWS_OR_BYTES): add a LIMIT or aggregate"
)


class _Bytes:
    """A whole result's bytes as the source clickhouse-connect's Native parser reads."""

    last_message: bytes | None = None
    exception_tag: str | None = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def gen(self) -> Iterator[bytes]:
        if self.data:
            yield self.data

    def close(self) -> None:
        self.data = b""


def _without_transport_format(lines: list[str]) -> str:
    """The AST of the statement alone. clickhouse-connect appends ``FORMAT Native`` to what it
    sends, so the EXPLAIN sees it as the statement's last clause (a FORMAT of the analyst's own
    would have been a syntax error next to it)."""
    children = re.match(r"^(\w+) \(children (\d+)\)$", lines[0]) if lines else None
    if children is None or lines[-1] != " Identifier Native":
        return "\n".join(lines)
    count = int(children.group(2)) - 1
    return "\n".join([f"{children.group(1)} (children {count})", *lines[1:-1]])


@contextlib.contextmanager
def _stderr_copied_to(output: list[str]) -> Iterator[None]:
    """Collect what is written to the process's stderr (fd 2) meanwhile, then pass it on.

    chDB says why its engine would not start only there; its exception says "Error initializing
    EmbeddedServer" whatever the reason.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read()
            if text:
                os.write(2, text)  # nothing written meanwhile is lost
            output.append(text.decode("utf-8", errors="replace"))


_DAMAGED_DEFINITION = re.compile(r"(?:metadata file|\(in file) (/\S+?\.sql)")


def embedded_failure(path: Path, error: str, engine_output: str) -> str:
    """Why the embedded engine at ``path`` would not open, from its own output."""
    reason = next(
        (line.strip() for line in engine_output.splitlines() if "DB::Exception" in line), error
    )
    if "Cannot lock file" in engine_output:
        return f"cannot open the embedded store at {path}: another process (a worker?) has it open"
    damaged = _DAMAGED_DEFINITION.search(engine_output)
    if damaged:
        return (
            f"cannot open the embedded store at {path}: the table definition {damaged.group(1)} "
            f"is damaged ({reason}). Restore the store from a backup, or move the directory {path} "
            "away: the worker then creates a new store and its sink rebuilds it from the topics"
        )
    return f"cannot open the embedded store at {path}: {reason}"
