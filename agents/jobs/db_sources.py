"""The database kinds a database backup job can dump: PostgreSQL and MySQL/MariaDB.

Each source knows how to list its databases, open the snapshot the manifest is
computed in, build the dump command and hand it its credentials; the job in
``database.py`` is the same for all. Credentials reach the dump tool only
through a 0600 file in ``state_dir/tmp`` (PGPASSFILE, ``--defaults-extra-file``)
that is removed afterwards -- never argv, never the environment's PGPASSWORD.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import psycopg

from agents import process
from agents.state import StateDir
from targets.mysql import commands as my_commands
from targets.mysql import snapshot as my_snapshot
from targets.mysql.config import MysqlTargetConfig
from targets.postgres import commands as pg_commands
from targets.postgres import snapshot as pg_snapshot
from targets.postgres.config import PostgresTargetConfig
from targets.tables import DatabaseUnavailable, TableChecksum

DumpCommand = tuple[tuple[str, ...], dict[str, str]]  # argv and environment


class Session(Protocol):
    label: str

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None: ...

    def checksums(self) -> tuple[str, list[dict[str, Any]], list[str]]: ...


# The pseudo-database under which a PostgreSQL target's roles and tablespaces are stored.
GLOBALS = "@globals"


class DatabaseSource(Protocol):
    engine: str
    checksum_method: str

    def list_databases(self) -> list[str]: ...

    def dump_filename(self, database: str) -> str: ...

    def session(self, database: str) -> contextlib.AbstractContextManager[Session]: ...

    def preflight(self, session: Session) -> str | None: ...

    def dump_command(self, session: Session, database: str, secrets: str | None) -> DumpCommand: ...

    def secrets_file(self, state: StateDir) -> contextlib.AbstractContextManager[str | None]: ...


def read_password(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read().rstrip("\n")


@contextlib.contextmanager
def private_file(state: StateDir, prefix: str, content: str) -> Iterator[str]:
    """A 0600 file in ``state_dir/tmp`` holding ``content``, removed on exit."""
    fd, path = tempfile.mkstemp(dir=state.sub("tmp"), prefix=prefix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _tables(rows: list[TableChecksum]) -> list[dict[str, Any]]:
    return [{"schema": t.schema, "name": t.name, "rows": t.rows, "checksum": t.checksum} for t in rows]


# -- PostgreSQL -------------------------------------------------------------------

class _PostgresSession:
    def __init__(self, inner: pg_snapshot.SnapshotSession) -> None:
        self.inner = inner
        self.label = inner.snapshot_id

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        """Nothing to wait for: pg_dump imports the exported snapshot, which stays valid until the end."""

    def checksums(self) -> tuple[str, list[dict[str, Any]], list[str]]:
        schema, tables = self.inner.checksums()
        return schema, _tables(tables), []


class _GlobalsSession:
    """Roles and tablespaces: no snapshot to share and no tables; the dump's digest is the manifest."""

    label = "pg_dumpall --globals-only (cluster-wide objects; no snapshot)"

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        """Nothing to wait for."""

    def checksums(self) -> tuple[str, list[dict[str, Any]], list[str]]:
        return "", [], []


class PostgresSource:
    engine = "postgres"
    checksum_method = "sum(hashtextextended(row::text, 0)) mod 2^64, in the snapshot pg_dump imported"

    def __init__(self, target: PostgresTargetConfig) -> None:
        self.target = target
        self.password = read_password(target.password_file)

    def _info(self, database: str) -> dict[str, object]:
        t = self.target
        return pg_snapshot.connection_info(t.host, t.port, t.user, database, self.password)

    def list_databases(self) -> list[str]:
        """The databases to dump, after the cluster's global objects when those are wanted."""
        extra = [GLOBALS] if self.target.globals else []
        if self.target.databases is not None:
            return [*extra, *self.target.databases]
        try:
            with psycopg.connect(**self._info("postgres")) as connection:  # type: ignore[arg-type]
                rows = connection.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
                ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(str(exc).strip().splitlines()[0]) from exc
        return [*extra, *(str(r[0]) for r in rows)]

    def dump_filename(self, database: str) -> str:
        return "globals.sql" if database == GLOBALS else f"{database}.dump"

    @contextlib.contextmanager
    def session(self, database: str) -> Iterator[Session]:
        if database == GLOBALS:
            yield _GlobalsSession()
            return
        with pg_snapshot.SnapshotSession(self._info(database)) as inner:
            yield _PostgresSession(inner)

    def preflight(self, session: Session) -> str | None:
        if not isinstance(session, _PostgresSession):
            return None
        result = process.run_process(
            pg_commands.make_pg_dump_version_command(self.target.pg_dump),
            env=process.inherited_environment({}), timeout=30,
        )
        major = pg_commands.parse_pg_dump_major(result.stdout)
        server = session.inner.server_major
        if major is None or major < server:
            return (f"{self.target.pg_dump} is version {major}, older than the server's {server}; install the "
                    "pg_dump of the server's major version (set 'pg_dump' in the target)")
        return None

    def dump_command(self, session: Session, database: str, secrets: str | None) -> DumpCommand:
        t = self.target
        if database == GLOBALS:
            argv = pg_commands.make_pg_dumpall_globals_command(t.pg_dumpall, host=t.host, port=t.port, user=t.user)
        else:
            argv = pg_commands.make_pg_dump_command(t.pg_dump, host=t.host, port=t.port, user=t.user,
                                                    database=database, snapshot=session.label)
        env = process.inherited_environment({"PGPASSFILE": secrets} if secrets else {})
        env.pop("PGPASSWORD", None)
        return argv, env

    @contextlib.contextmanager
    def secrets_file(self, state: StateDir) -> Iterator[str | None]:
        if self.password is None:
            yield None
            return
        t = self.target
        line = pg_commands.make_pgpass_line(t.host, t.port, t.user, self.password)
        with private_file(state, "pgpass-", line) as path:
            yield path


# -- MySQL / MariaDB ----------------------------------------------------------------

class _MysqlSession:
    label = "FLUSH TABLES WITH READ LOCK + START TRANSACTION WITH CONSISTENT SNAPSHOT"

    def __init__(self, inner: my_snapshot.ConsistentSnapshot) -> None:
        self.inner = inner

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        self.inner.release_when_dump_started(dump_running)

    def checksums(self) -> tuple[str, list[dict[str, Any]], list[str]]:
        schema, tables, non_transactional = self.inner.checksums()
        return schema, _tables(tables), non_transactional


class MysqlSource:
    engine = "mysql"
    checksum_method = ("sum(first 64 bits of MD5(CONCAT_WS(0x1f, columns as utf8mb4 or hex, NULL flags))) mod 2^64, "
                       "in a transaction started with the dump's while writes were held")

    def __init__(self, target: MysqlTargetConfig) -> None:
        self.target = target
        self.password = read_password(target.password_file)

    def list_databases(self) -> list[str]:
        if self.target.databases is not None:
            return list(self.target.databases)
        t = self.target
        connection = my_snapshot.connect(t.host, t.port, t.user, self.password)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW DATABASES")
                names = [str(r[0]) for r in cursor.fetchall()]
        finally:
            connection.close()
        system = {"mysql", "information_schema", "performance_schema", "sys"}
        return [n for n in names if n not in system]

    def dump_filename(self, database: str) -> str:
        return f"{database}.dump"

    @contextlib.contextmanager
    def session(self, database: str) -> Iterator[Session]:
        t = self.target
        with my_snapshot.ConsistentSnapshot(t.host, t.port, t.user, self.password, database) as inner:
            yield _MysqlSession(inner)

    def preflight(self, session: Session) -> str | None:
        return None

    def dump_command(self, session: Session, database: str, secrets: str | None) -> DumpCommand:
        argv = [self.target.dump]
        if secrets:
            argv.append(f"--defaults-extra-file={secrets}")  # must come first
        # Options MySQL 8's mysqldump accepts too; no --databases, so a restore may pick another name.
        argv += ["--single-transaction", "--quick", "--routines", "--triggers", "--events", "--hex-blob",
                 "--default-character-set=utf8mb4", "--no-tablespaces", database]
        env = process.inherited_environment({})
        env.pop("MYSQL_PWD", None)
        return tuple(argv), env

    @contextlib.contextmanager
    def secrets_file(self, state: StateDir) -> Iterator[str | None]:
        t = self.target
        defaults = my_commands.make_client_defaults(t.host, t.port, t.user, self.password)
        with private_file(state, "my-", defaults) as path:
            yield path


def make_source(target: PostgresTargetConfig | MysqlTargetConfig) -> DatabaseSource:
    """The source for a database target. Raises OSError when its password file cannot be read."""
    if isinstance(target, PostgresTargetConfig):
        return PostgresSource(target)
    return MysqlSource(target)
