"""The one seam to ClickHouse: the embedded chDB engine (``chdb://PATH``) or a server
(``http(s)://user:pass@host:port/db``), behind one clickhouse-connect client API.

Everything that touches ClickHouse goes through ``Store``: the versioned DDL in
``schemas/clickhouse/``, batched inserts (values travel as column data, never as SQL text), and
read-only queries. A chDB engine (``streams/store/embedded.py``) belongs to one process, so while
a worker runs, other processes reach its store through the worker's web server (see
``streams/store/query.py``).

Analysts' queries (``Store.query``) are read-only by the engine, bounded, and isolated from each
other (docs/security.md, "Query API"; the limits, the checks and the reading of the result are in
``streams/store/analyst_query.py``):

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

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.insert import InsertContext

from streams.redaction import redact_url
from streams.store.analyst_query import (
    ANALYST_LIMITS,
    BUDGET_SLOTS,
    QueryBudget,
    QueryResult,
    checked_query,
)
from streams.store.embedded import embedded_failure, embedded_path, stderr_copied_to
from streams.store.errors import StoreBusy, StoreError
from streams.store.schema import (
    MIGRATIONS_TABLE,
    SCHEMA_DIR,
    check_cluster_name,
    load_migrations,
    migration_statements,
    migrations_table_ddl,
)

log = logging.getLogger("streams.store.clickhouse")

ClientFactory = Callable[..., Client]


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
            with stderr_copied_to(engine_output):
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
                return checked_query(
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
