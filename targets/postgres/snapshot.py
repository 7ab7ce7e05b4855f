"""Reading a PostgreSQL database inside one exported snapshot: the manifest side of a dump.

:class:`SnapshotSession` opens a REPEATABLE READ, READ ONLY transaction,
exports its snapshot for ``pg_dump --snapshot`` and, in that same snapshot,
computes the schema digest and every table's row count and checksum. So the
manifest describes exactly the data the dump contains, however busy the
database is.
"""

from __future__ import annotations

import contextlib
import hashlib
from types import TracebackType

import psycopg

from targets.postgres import checksum
from targets.tables import DatabaseUnavailable, TableChecksum


def connection_info(host: str, port: int, user: str | None, database: str, password: str | None) -> dict[str, object]:
    info: dict[str, object] = {"host": host, "port": port, "dbname": database, "connect_timeout": 10,
                               "application_name": "drill-agent"}
    if user:
        info["user"] = user
    if password is not None:
        info["password"] = password
    return info


def server_major_version(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    return int(connection.info.server_version) // 10000


def compute_schema_digest(connection: psycopg.Connection[tuple[object, ...]]) -> str:
    """SHA-256 over the description of every user relation, in a stable order."""
    digest = hashlib.sha256()
    for row in connection.execute(checksum.SCHEMA_SQL):
        digest.update(("\x1f".join("" if v is None else str(v) for v in row) + "\n").encode())
    return "sha256:" + digest.hexdigest()


def compute_table_checksums(connection: psycopg.Connection[tuple[object, ...]]) -> list[TableChecksum]:
    """Row count and checksum of every user table, in name order."""
    tables = [(str(s), str(t)) for s, t in connection.execute(checksum.LIST_TABLES_SQL)]
    result = []
    for schema, table in tables:
        row = connection.execute(checksum.make_table_checksum_sql(schema, table)).fetchone()
        assert row is not None
        result.append(TableChecksum(schema, table, int(str(row[0])), str(row[1])))
    return result


def begin_canonical_snapshot(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """Start the read-only repeatable-read transaction with canonical value printing."""
    connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    for statement in checksum.make_settings_sql():
        connection.execute(statement)


class SnapshotSession:
    """A transaction whose snapshot is exported for pg_dump and checksummed here.

    Use as a context manager; the transaction stays open (and the snapshot valid)
    until exit, so pg_dump must have started before the block ends.
    """

    def __init__(self, info: dict[str, object]) -> None:
        self.info = info
        self.connection: psycopg.Connection[tuple[object, ...]] | None = None
        self.snapshot_id = ""

    def __enter__(self) -> SnapshotSession:
        try:
            self.connection = psycopg.connect(**self.info, autocommit=True)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(_first_line(exc)) from exc
        begin_canonical_snapshot(self.connection)
        row = self.connection.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        self.snapshot_id = str(row[0])
        return self

    @property
    def server_major(self) -> int:
        assert self.connection is not None
        return server_major_version(self.connection)

    def checksums(self) -> tuple[str, list[TableChecksum]]:
        """(schema digest, table checksums) in the exported snapshot."""
        assert self.connection is not None
        try:
            return compute_schema_digest(self.connection), compute_table_checksums(self.connection)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(_first_line(exc)) from exc

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.connection is not None:
            with contextlib.suppress(psycopg.Error):  # the connection may be gone: just close it
                self.connection.execute("ROLLBACK")
            self.connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
