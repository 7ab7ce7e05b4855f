"""Reading a MySQL/MariaDB database in the same snapshot as its dump.

MySQL has no exportable snapshots, so the agent makes two transactions start
while writes are held, the way ``mysqldump --single-transaction --source-data``
pins its binlog position:

1. a lock connection takes ``FLUSH TABLES WITH READ LOCK`` (writes wait);
2. the checksum connection starts ``START TRANSACTION WITH CONSISTENT SNAPSHOT``;
3. the dump tool starts with ``--single-transaction``; the agent waits until its
   transaction shows in ``information_schema.INNODB_TRX``;
4. ``UNLOCK TABLES``: writes resume. Both transactions saw the same committed
   state, so the checksums describe exactly the dump.

What this cannot cover: tables of non-transactional engines (MyISAM, Aria,
MEMORY) are read outside any snapshot once the lock is released; the manifest
lists them under ``non_transactional`` and their checksums are only exact if
nothing wrote to them during the backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pymysql

from targets.mysql import checksum
from targets.tables import DatabaseUnavailable, TableChecksum, TableManifest

_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


def connect(host: str, port: int, user: str, password: str | None, database: str | None = None) -> Any:
    try:
        return pymysql.connect(host=host, port=port, user=user, password=password or "", database=database,
                               autocommit=True, connect_timeout=10, charset="utf8mb4")
    except pymysql.MySQLError as exc:
        raise DatabaseUnavailable(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"
    return str(exc) or type(exc).__name__


def compute_checksums(cursor: Any, database: str) -> TableManifest:
    """Schema digest, table checksums and non-transactional tables of ``database`` in the cursor's transaction."""
    statement: str
    for statement in checksum.SESSION_SETTINGS:
        cursor.execute(statement)
    cursor.execute(checksum.LIST_TABLES_SQL, (database,))
    tables = [(str(name), str(engine)) for name, engine in cursor.fetchall()]
    schema = hashlib.sha256()
    result = []
    for name, _engine in tables:
        cursor.execute(f"SHOW CREATE TABLE {checksum.quote_ident(database)}.{checksum.quote_ident(name)}")
        create = _AUTO_INCREMENT.sub("", str(cursor.fetchone()[1]))
        schema.update(create.encode() + b"\n")
        cursor.execute(checksum.LIST_COLUMNS_SQL, (database, name))
        columns = [(str(c), str(t)) for c, t in cursor.fetchall()]
        cursor.execute(checksum.make_table_checksum_sql(database, name, columns))
        count, total = cursor.fetchone()
        result.append(TableChecksum(database, name, int(count), str(total)))
    non_transactional = [name for name, engine in tables if not checksum.is_transactional(engine)]
    return TableManifest("sha256:" + schema.hexdigest(), tuple(result), tuple(non_transactional))


class ConsistentSnapshot:
    """A checksum transaction that starts, with the dump's, while writes are held.

    Use as a context manager; call :meth:`release_when_dump_started` once the
    dump tool is running, then :meth:`checksums`.
    """

    def __init__(self, host: str, port: int, user: str, password: str | None, database: str) -> None:
        self.database = database
        self._args = (host, port, user, password)
        self._lock: Any = None
        self._reader: Any = None
        self.server_version = ""

    def __enter__(self) -> ConsistentSnapshot:
        self._lock = connect(*self._args)
        self._reader = connect(*self._args, database=self.database)
        try:
            with self._lock.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                self.server_version = str(cursor.fetchone()[0])
                cursor.execute("FLUSH TABLES WITH READ LOCK")
            with self._reader.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        except pymysql.MySQLError as exc:
            self._close()
            raise DatabaseUnavailable(_describe(exc)) from exc
        return self

    def release_when_dump_started(
        self, dump_running: Callable[[], bool], timeout: float = 60.0, poll: float = 0.02
    ) -> None:
        """Wait until another connection of ours holds a transaction (the dump's), then let writes go.

        Returns early when ``dump_running`` turns false (the dump failed; its error is reported).
        Raises :class:`DatabaseUnavailable` when the dump never started a transaction.
        """
        mine = (self._lock.thread_id(), self._reader.thread_id())
        deadline = time.monotonic() + timeout
        try:
            with self._lock.cursor() as cursor:
                while time.monotonic() < deadline and dump_running():
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
                        "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                        "WHERE p.ID NOT IN (%s, %s) AND p.USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)",
                        mine,
                    )
                    if cursor.fetchone()[0]:
                        return
                    time.sleep(poll)
            if not dump_running():
                return
            raise DatabaseUnavailable(f"the dump did not start its transaction within {timeout:.0f}s")
        finally:
            with contextlib.suppress(pymysql.MySQLError), self._lock.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")

    def checksums(self) -> TableManifest:
        try:
            with self._reader.cursor() as cursor:
                return compute_checksums(cursor, self.database)
        except pymysql.MySQLError as exc:
            raise DatabaseUnavailable(_describe(exc)) from exc

    def _close(self) -> None:
        for connection in (self._reader, self._lock):
            if connection is not None:
                with contextlib.suppress(pymysql.MySQLError):
                    connection.close()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(pymysql.MySQLError), self._lock.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")
        with contextlib.suppress(pymysql.MySQLError):
            self._reader.rollback()
        self._close()
