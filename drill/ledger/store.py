"""Where the ledger lives: SQLite by default, PostgreSQL by URL. The same SQL on both.

``sqlite:///path/ledger.db`` or a plain path opens SQLite; ``postgresql://…``
opens PostgreSQL (psycopg). Appends run in a transaction that holds the log's
write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``LOCK TABLE … EXCLUSIVE``),
so two writers never give two entries the same index.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agents.contract.errors import DrillError

if TYPE_CHECKING:
    import psycopg

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger_keys (keyid TEXT PRIMARY KEY, public_pem TEXT NOT NULL, owner TEXT NOT NULL, "
    "role TEXT NOT NULL, added TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger_entries (idx BIGINT PRIMARY KEY, leaf_hash TEXT NOT NULL UNIQUE, "
    "record_id TEXT NOT NULL UNIQUE, keyid TEXT NOT NULL, kind TEXT NOT NULL, host TEXT NOT NULL, "
    "drill_id TEXT, recorded TEXT NOT NULL, envelope TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ledger_entries_drill ON ledger_entries (drill_id)",
    "CREATE TABLE IF NOT EXISTS ledger_checkpoints (tree_size BIGINT PRIMARY KEY, root TEXT NOT NULL, "
    "issued TEXT NOT NULL, envelope TEXT NOT NULL)",
)


class StoreError(DrillError):
    """The ledger's database cannot be opened or used; the message says why (never a password)."""

    code = "ledger_unavailable"


class Store(Protocol):
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def writing(self) -> contextlib.AbstractContextManager[None]: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    @property
    def dialect(self) -> str: ...

    def close(self) -> None: ...


# How long an SQLite ledger waits for another process's lock (two ``drillctl`` commands at once).
_BUSY_SECONDS = 30.0


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch to write-ahead logging, waiting for other processes doing the same. Switching takes the database's
    exclusive lock, and SQLite answers "database is locked" at once, without its busy wait, when another
    connection is opening the same new database: two first starts at once. Raises sqlite3.Error."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SqliteStore:
    """SQLite, in autocommit mode with explicit write transactions. SQL uses ``%s`` placeholders."""

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise StoreError(f"the SQLite ledger {path} is a directory; give a file path")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # One thread at a time uses a connection (the service lends them from a pool), not always the same one.
            self.connection = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_SECONDS,
                                              check_same_thread=False)
            _use_wal(self.connection)
            self.connection.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite ledger {path}: {exc}") from exc
        self.where = path

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%s", "?")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.connection.execute(self._sql(sql), tuple(params)).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.connection.execute(self._sql(sql), tuple(params))

    dialect = "sqlite"

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self.transaction():
            yield

    depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; SQLite has one writer at a time, so it also serialises every other writer.
        Nested, it joins the one already open (as PostgreSQL's savepoints do)."""
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        self.connection.execute("BEGIN IMMEDIATE")
        self.depth = 1
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        finally:
            self.depth = 0
        self.connection.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


class PostgresStore:
    """PostgreSQL by URL. psycopg is imported here only: reading a bundle offline needs no database driver."""

    def __init__(self, url: str) -> None:
        import psycopg  # noqa: PLC0415 -- see the class docstring

        self.where = url.rsplit("@", maxsplit=1)[-1]  # never the password
        try:
            self.connection: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                url, autocommit=True, connect_timeout=10)
        except (psycopg.Error, ValueError) as exc:
            message = str(exc).strip().replace(url, self.where)
            raise StoreError(f"cannot open the PostgreSQL ledger at {self.where}: {message}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.connection.execute(sql, tuple(params)).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.connection.execute(sql, tuple(params))

    dialect = "postgresql"

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self.connection.transaction():
            self.connection.execute("LOCK TABLE ledger_entries IN EXCLUSIVE MODE")
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction; rows are locked by the statements in it (``FOR UPDATE [SKIP LOCKED]``)."""
        with self.connection.transaction():
            yield

    def close(self) -> None:
        self.connection.close()


def open_store(url: str) -> Store:
    """Open (and create the tables of) the ledger database at ``url``. Raises :class:`StoreError`."""
    store: Store
    if url.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(url)
    elif url.startswith("sqlite:///"):
        store = SqliteStore(url[len("sqlite://"):])
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unknown ledger URL scheme {scheme!r}: use sqlite:///PATH or postgresql://HOST/DATABASE")
    else:
        store = SqliteStore(url)
    try:
        for statement in SCHEMA:
            store.execute(statement)
    except Exception as exc:  # sqlite3.Error or psycopg.Error: the driver's own words
        store.close()
        raise StoreError(f"cannot create the ledger's tables: {exc}") from exc
    return store
