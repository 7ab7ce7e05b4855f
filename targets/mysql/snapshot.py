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
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
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


class RowsTooLong(DatabaseUnavailable):
    """Rows whose text is longer than the server's ``max_allowed_packet`` even with every column digested: their
    content cannot be summed."""


@dataclass(frozen=True)
class _Table:
    name: str
    engine: str
    columns: list[checksum.Column]
    ranges: list[str]  # predicates that share its rows out between the cursors ('' = the whole table)


def compute_checksums(
    cursors: Sequence[Any], database: str, method: str, columns_digested: Collection[str] | None = None
) -> TableManifest:
    """Schema digest, table checksums and non-transactional tables of ``database``, by ``method``.

    Given one or more cursors, each in a transaction that sees the same state (the first reads the schema);
    a large table with an integer key is summed in ranges, one cursor each, in parallel. ``columns_digested``: the
    tables to sum with each column digested first, as a manifest names them; None (at backup) means those in which
    a row's text is longer than ``max_allowed_packet``, found by summing them the plain way first.

    The returned method is ``method``, with :data:`checksum.WITH_COLUMNS_DIGESTED` added at backup when some
    table was digested. Raises ``pymysql.MySQLError`` from the server, :class:`RowsTooLong` when a row's text is
    too long in a table not named in ``columns_digested`` or even digested, ``DatabaseUnavailable`` when
    ``columns_digested`` names tables and ``method`` does not allow it, and ``ValueError`` for a method not in
    ``checksum.METHODS``.
    """
    row_method, digests_allowed = checksum.split_method(method)
    if columns_digested and not digests_allowed:
        raise DatabaseUnavailable("the manifest marks tables columns_digested, but its checksum method does not "
                                  "sum any that way")
    for cursor in cursors:
        for statement in checksum.SESSION_SETTINGS:
            cursor.execute(statement)
    schema_digest, tables = _read_tables(cursors, database)
    digested = set(columns_digested or ())
    sums = _sum_tables(cursors, database, row_method, tables, digested)
    too_long = {name for name, (_, _, truncated) in sums.items() if truncated}
    if too_long and columns_digested is None:  # at backup: those tables again, each column digested
        digested = too_long
        sums.update(_sum_tables(cursors, database, row_method, [t for t in tables if t.name in digested], digested))
        method = row_method + checksum.WITH_COLUMNS_DIGESTED
        too_long = {name for name, (_, _, truncated) in sums.items() if truncated}
    if too_long:
        how = "even with each column digested" if too_long & digested else "and the manifest sums them whole"
        raise RowsTooLong(f"rows of {', '.join(sorted(too_long))[:300]} are longer than the server's "
                          f"max_allowed_packet {how}: their content cannot be summed")
    result = [TableChecksum(database, t.name, sums[t.name][0], str(sums[t.name][1]), t.name in digested)
              for t in tables]
    non_transactional = [t.name for t in tables if not checksum.is_transactional(t.engine)]
    return TableManifest(schema_digest, tuple(result), tuple(non_transactional), method=method)


def _read_tables(cursors: Sequence[Any], database: str) -> tuple[str, list[_Table]]:
    """The schema digest and every base table, with the key ranges each is summed in."""
    first = cursors[0]
    first.execute(checksum.LIST_TABLES_SQL, (database,))
    listed = [(str(name), str(engine), int(rows)) for name, engine, rows in first.fetchall()]
    schema = hashlib.sha256()
    tables = []
    for name, engine, estimated_rows in listed:
        first.execute(f"SHOW CREATE TABLE {checksum.quote_ident(database)}.{checksum.quote_ident(name)}")
        create = _AUTO_INCREMENT.sub("", str(first.fetchone()[1]))
        schema.update(create.encode() + b"\n")
        first.execute(checksum.LIST_COLUMNS_SQL, (database, name))
        columns = [checksum.Column(str(c), str(t), str(cs), str(co), bool(k)) for c, t, cs, co, k in first.fetchall()]
        ranges = [""]
        key = checksum.split_key(columns)
        # A non-transactional table is read in one statement: two ranges read at two moments could count a row
        # that moved between them twice, or not at all.
        if (key is not None and len(cursors) > 1 and estimated_rows >= checksum.SPLIT_FROM_ROWS
                and checksum.is_transactional(engine)):
            first.execute(checksum.make_key_bounds_sql(database, name, key))
            low, high = first.fetchone()
            ranges = checksum.make_key_ranges(key, low, high, len(cursors))
        tables.append(_Table(name, engine, columns, ranges))
    return "sha256:" + schema.hexdigest(), tables


def _sum_tables(
    cursors: Sequence[Any], database: str, method: str, tables: Sequence[_Table], digested: Collection[str]
) -> dict[str, tuple[int, int, bool]]:
    """Each table's (row count, sum, whether a row's text was too long), its ranges on the cursors in parallel;
    ``method`` is one of ``checksum.ROW_METHODS``."""
    parts = [(table.name, checksum.make_table_checksum_sql(database, table.name, table.columns, method, where,
                                                           columns_digested=table.name in digested))
             for table in tables for where in table.ranges]
    sums = {table.name: (0, 0, False) for table in tables}
    for (name, _sql), (count, total, truncated) in zip(
            parts, _run_in_parallel(cursors, [sql for _, sql in parts]), strict=True):
        rows, so_far, any_truncated = sums[name]
        sums[name] = (rows + count, (so_far + total) % checksum.MODULUS, any_truncated or truncated)
    return sums


def _run_in_parallel(cursors: Sequence[Any], statements: list[str]) -> list[tuple[int, int, bool]]:
    """Each statement's (count, sum, whether a row's text was longer than ``max_allowed_packet``), the statements
    shared out between the cursors (one thread each).

    The server does the work, so the threads mostly wait on their sockets. Raises the first error a cursor met.
    """
    results: list[tuple[int, int, bool]] = [(0, 0, False)] * len(statements)
    pending = iter(enumerate(statements))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(cursor: Any) -> None:
        while not errors:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            index, sql = item
            try:
                cursor.execute(sql)
                count, total = cursor.fetchone()
                truncated = _warned(cursor, checksum.LONGER_THAN_PACKET)
            except BaseException as error:  # handed to the caller's thread
                errors.append(error)
                return
            results[index] = (int(count), int(total), truncated)

    helpers = [threading.Thread(target=work, args=(cursor,), name="checksum", daemon=True) for cursor in cursors[1:]]
    for helper in helpers:
        helper.start()
    work(cursors[0])
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return results


def _warned(cursor: Any, code: int) -> bool:
    """Whether the cursor's last statement left a warning ``code`` (asked only when it left any), or more warnings
    than the server kept to show (then it may have)."""
    count = cursor.warning_count
    if not count:
        return False
    cursor.execute("SHOW WARNINGS")
    shown = cursor.fetchall()
    return len(shown) < count or any(int(row[1]) == code for row in shown)


# What a server without the function answers: no such function (1305), no database to look it up in (1046), a
# syntax error (1064) or an unknown native function (1630).
_NO_FUNCTION = frozenset({1046, 1064, 1305, 1630})


def crc32c_available(cursor: Any) -> bool:
    """Whether the server has ``CRC32C`` (MariaDB 10.8 and later; not MySQL 8), which :data:`checksum.CRC_PAIR`
    needs. Raises ``pymysql.MySQLError`` for any other failure (a lost connection is not a missing function)."""
    try:
        cursor.execute(checksum.PROBE_CRC32C_SQL)
        cursor.fetchall()
    except (pymysql.ProgrammingError, pymysql.OperationalError, pymysql.InternalError) as error:
        if error.args and error.args[0] in _NO_FUNCTION:
            return False
        raise
    return True


class ConsistentSnapshot:
    """Checksum transactions that start, with the dump's, while writes are held.

    Use as a context manager; call :meth:`release_when_dump_started` once the
    dump tool is running, then :meth:`checksums`. ``readers`` connections share
    the checksum work (all of them start their transactions under the lock, so
    they see the same state as the dump).
    """

    def __init__(self, host: str, port: int, user: str, password: str | None, database: str,
                 readers: int = 2) -> None:
        self.database = database
        self._args = (host, port, user, password)
        self._readers_wanted = max(1, readers)
        self._lock: Any = None
        self._readers: list[Any] = []
        self.server_version = ""
        self.method = checksum.CRC_PAIR

    def __enter__(self) -> ConsistentSnapshot:
        try:
            self._lock = connect(*self._args)
            for _ in range(self._readers_wanted):
                self._readers.append(connect(*self._args, database=self.database))
            with self._lock.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                self.server_version = str(cursor.fetchone()[0])
                self.method = checksum.CRC_PAIR if crc32c_available(cursor) else checksum.MD5_PREFIX
                cursor.execute("FLUSH TABLES WITH READ LOCK")
            for reader in self._readers:
                with reader.cursor() as cursor:
                    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        except DatabaseUnavailable:
            self._close()
            raise
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
        mine = ",".join(str(connection.thread_id()) for connection in (self._lock, *self._readers))
        deadline = time.monotonic() + timeout
        try:
            with self._lock.cursor() as cursor:
                while time.monotonic() < deadline and dump_running():
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
                        "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                        "WHERE FIND_IN_SET(p.ID, %s) = 0 AND p.USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)",
                        (mine,),
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
        cursors = [reader.cursor() for reader in self._readers]
        try:
            return compute_checksums(cursors, self.database, self.method)
        except pymysql.MySQLError as exc:
            raise DatabaseUnavailable(_describe(exc)) from exc
        finally:
            for cursor in cursors:
                cursor.close()

    def _close(self) -> None:
        for connection in (*self._readers, self._lock):
            if connection is not None:
                with contextlib.suppress(pymysql.MySQLError):
                    connection.close()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(pymysql.MySQLError), self._lock.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")
        for reader in self._readers:
            with contextlib.suppress(pymysql.MySQLError):
                reader.rollback()
        self._close()
