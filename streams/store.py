"""The one seam to ClickHouse: the embedded chDB engine (``chdb://PATH``) or a server
(``http(s)://user:pass@host:port/db``), behind one clickhouse-connect client API.

Everything that touches ClickHouse goes through ``Store``: the versioned DDL in
``schemas/clickhouse/``, batched inserts (values travel as column data, never as SQL text), and
read-only queries. A chDB engine belongs to one process, so while a worker runs, other processes
reach its store through the worker's web server (see ``streams/query.py``).

Read-only is enforced by the engine, not by inspecting SQL: queries go through a second client
whose session carries ``readonly = 1``. On chDB that is a ``SET`` on the client's own connection
handle; on a server it is sent with every request. Either way ClickHouse refuses writes, DDL,
table functions and changing the setting back (tests/integration/test_clickhouse_store.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.insert import InsertContext

log = logging.getLogger("streams.store")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
QUERY_SECONDS = 300  # longest a read-only query may run
_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")

ClientFactory = Callable[..., Client]


class StoreError(Exception):
    """ClickHouse refused or could not run something; the message is ClickHouse's own."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


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


def split_statements(text: str) -> list[str]:
    """The statements of a DDL file: each ends with a line ending in a semicolon. Comment lines
    are for the reader and are not sent (one ending in a semicolon ends nothing)."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().removesuffix(";").rstrip())
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [statement for statement in statements if statement]


def load_migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """``NNN_name.sql`` files in version order; a repeated version number is an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise StoreError(f"{path}: schema files are named NNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise StoreError(f"{path}: version {version} is also {migrations[version].name}")
        text = path.read_text(encoding="utf-8")
        migrations[version] = Migration(
            version=version,
            name=path.name,
            statements=tuple(split_statements(text)),
            checksum=hashlib.sha256(text.encode()).hexdigest(),
        )
    if not migrations:
        raise StoreError(f"no schema files in {directory}")
    return [migrations[v] for v in sorted(migrations)]


class Store:
    """A ClickHouse database: schema, inserts and queries. Methods block; call them from a thread
    (``asyncio.to_thread``) in async code."""

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        client_factory: ClientFactory = clickhouse_connect.get_client,
    ) -> None:
        self.url = url
        self.path = embedded_path(url)
        self._database = database
        self._factory = client_factory
        # One client per role, each used by one thread at a time: a chDB handle serialises calls
        # anyway, and a server refuses two concurrent queries in one HTTP session.
        self._writer: Client | None = None
        self._reader: Client | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # (table, columns) → the writer's insert context, reused until an error or a schema
        # change. A new one per insert asked ClickHouse for the column types first, and it refers
        # to itself (a bound method), so it lived with its rows until a cyclic collection: those
        # rows were most of what full collections had to traverse. A reused context holds only
        # its last batch, freed when the next one replaces it.
        self._insert_contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}

    @property
    def embedded(self) -> bool:
        return self.path is not None

    def _client(self, readonly: bool) -> Client:
        kwargs: dict[str, Any] = {}
        if self._database:
            kwargs["database"] = self._database
        if readonly:
            # In this order: once readonly is set, no setting can change. The time limit keeps
            # an analyst's runaway query from occupying a worker's engine for long.
            kwargs["settings"] = {"max_execution_time": QUERY_SECONDS, "readonly": 1}
        if self.path is None:
            try:
                return self._factory(dsn=self.url, **kwargs)
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
            self._writer = self._client(readonly=False)
        return self._writer

    def _reader_client(self) -> Client:
        if self._reader is None:
            self._reader = self._client(readonly=True)
        return self._reader

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
                client.command(
                    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                    "version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
                    ") ENGINE = ReplacingMergeTree ORDER BY version"
                )
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
                    for statement in migration.statements:
                        client.command(statement)
                    row = [migration.version, migration.name, migration.checksum, datetime.now(UTC)]
                    client.insert(
                        MIGRATIONS_TABLE,
                        [row],
                        column_names=["version", "name", "checksum", "applied_at"],
                    )
                    applied.append(migration.version)
                    log.info("applied schema %s to %s", migration.name, redact(self.url))
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
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, readonly: bool = True
    ) -> QueryResult:
        """Run one SELECT-like statement; ``{name:Type}`` placeholders take ``parameters``."""
        sql = sql.strip().rstrip(";").strip()
        if not sql:
            raise StoreError("empty query")
        lock = self._read_lock if readonly else self._write_lock
        with lock:
            client = self._reader_client() if readonly else self._writer_client()
            try:
                result = client.query(sql, parameters=dict(parameters or {}))
            except ClickHouseError as exc:
                raise StoreError(str(exc)) from exc
        return QueryResult(
            columns=tuple(result.column_names),
            types=tuple(t.name for t in result.column_types),
            rows=[tuple(row) for row in result.result_rows],
        )

    def close(self) -> None:
        # Under both locks: a query or insert running in another thread finishes first.
        with self._read_lock, self._write_lock:
            for client in (self._reader, self._writer):
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # closing is best effort: the process may be going away
                        log.debug("error closing a ClickHouse client", exc_info=True)
            self._reader = self._writer = None
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
    client_factory: ClientFactory = clickhouse_connect.get_client,
) -> Store:
    """A connected Store. ``read_only``: only the read-only client is opened, and an embedded
    store that is not there is an error rather than created (no worker ever wrote it)."""
    store = Store(url, database=database, client_factory=client_factory)
    if read_only and store.path is not None and not store.path.is_dir():
        raise StoreError(f"no embedded store at {store.path} (a worker creates it)")
    # Connect now, so a store that cannot be opened fails here with a clear message.
    if read_only:
        store._reader_client()
    else:
        store._writer_client()
    return store


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


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = f"{parsed.username}:***@{parsed.hostname}"
        if parsed.port:
            netloc += f":{parsed.port}"
        return parsed._replace(netloc=netloc).geturl()
    return url
