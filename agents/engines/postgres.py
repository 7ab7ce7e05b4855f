"""The PostgreSQL engine: ``pg_dump`` in an exported snapshot; a throwaway cluster or a scratch server to verify in.

Capture: a ``REPEATABLE READ, READ ONLY`` transaction exports its snapshot;
``pg_dump --format=custom --snapshot`` dumps exactly that state while the same
transaction checksums every table (``targets.postgres.snapshot``). The
cluster's roles and tablespaces are the pseudo-database ``@globals``
(``pg_dumpall --globals-only --no-role-passwords``), verified by digest.
Credentials reach the tools through a 0600 PGPASSFILE only.

Verify: ``initdb`` into the scratch directory, ``pg_ctl start`` with its unix
socket there and no TCP listener (no port can clash, nothing is reachable from
outside), run as the instance account; stopped (immediate mode) and left for the
caller to delete. Or, with ``scratch.postgres.server``, a database
``drill_verify_<random>`` created on that server and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg

from agents import process
from agents.engines.base import Capture, Command, RestoreTarget
from agents.scratch.account import InstanceAccount, ScratchUnusable, check_socket_path
from agents.scratch.config import PostgresScratch, ScratchConfig
from agents.scratch.logs import first_problem_line, last_line
from agents.secretfiles import private_file, read_password
from agents.state import StateDir
from targets.postgres import commands
from targets.postgres import snapshot as pg_snapshot
from targets.postgres.checksum import quote_ident
from targets.postgres.config import PostgresTargetConfig
from targets.registry import TargetConfig
from targets.tables import DatabaseUnavailable, TableManifest

# The pseudo-database under which a PostgreSQL target's roles and tablespaces are stored.
GLOBALS = "@globals"
SOCKET_PORT = 5432  # names the socket file only: the throwaway cluster listens on no TCP port
START_TIMEOUT = 60


def _target(target: TargetConfig) -> PostgresTargetConfig:
    assert isinstance(target, PostgresTargetConfig), f"{target.name} is not a postgres target"
    return target


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- capture --------------------------------------------------------------------------

@dataclass
class _DatabaseCapture:
    target: PostgresTargetConfig
    database: str
    session: pg_snapshot.SnapshotSession
    passfile: str | None

    @property
    def label(self) -> str:
        return self.session.snapshot_id

    def preflight(self) -> str | None:
        result = process.run_process(commands.make_pg_dump_version_command(self.target.pg_dump),
                                     env=process.inherited_environment({}), timeout=30)
        major = commands.parse_pg_dump_major(result.stdout)
        server = self.session.server_major
        if major is None or major < server:
            return (f"{self.target.pg_dump} is version {major}, older than the server's {server}; install the "
                    "pg_dump of the server's major version (set 'pg_dump' in the target)")
        return None

    def dump_command(self) -> Command:
        t = self.target
        argv = commands.make_pg_dump_command(t.pg_dump, host=t.host, port=t.port, user=t.user,
                                             database=self.database, snapshot=self.session.snapshot_id)
        return argv, _tool_environment(self.passfile)

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        """Nothing to wait for: pg_dump imports the exported snapshot, which stays valid until the end."""

    def checksums(self) -> TableManifest:
        schema, tables = self.session.checksums()
        return TableManifest(schema, tuple(tables))


@dataclass
class _GlobalsCapture:
    """Roles and tablespaces: no snapshot to share and no tables; the dump's digest is the manifest."""

    target: PostgresTargetConfig
    passfile: str | None
    label: str = "pg_dumpall --globals-only (cluster-wide objects; no snapshot)"

    def preflight(self) -> str | None:
        return None

    def dump_command(self) -> Command:
        t = self.target
        argv = commands.make_pg_dumpall_globals_command(t.pg_dumpall, host=t.host, port=t.port, user=t.user)
        return argv, _tool_environment(self.passfile)

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        """Nothing to wait for."""

    def checksums(self) -> TableManifest:
        return TableManifest("", ())


def _tool_environment(passfile: str | None) -> dict[str, str]:
    env = process.inherited_environment({"PGPASSFILE": passfile} if passfile else {})
    env.pop("PGPASSWORD", None)
    return env


# -- verify ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PostgresRestoreTarget:
    """An empty database to load one dump into, and how to read it back."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    where: str
    pg_restore: str
    passfile: str | None = None
    log_file: str | None = None  # a throwaway cluster's server log

    def server_problem(self) -> str:
        return first_problem_line(self.log_file, ("PANIC:", "FATAL:", "ERROR:")) if self.log_file else ""

    def load_command(self) -> Command:
        argv = commands.make_pg_restore_command(self.pg_restore, host=self.host, port=self.port, user=self.user,
                                                database=self.database)
        return argv, _tool_environment(self.passfile)

    def connect(self, database: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True, connect_timeout=10)

    def checksums(self) -> TableManifest:
        try:
            with self.connect(self.database) as connection:
                pg_snapshot.begin_canonical_snapshot(connection)
                return TableManifest(pg_snapshot.compute_schema_digest(connection),
                                     tuple(pg_snapshot.compute_table_checksums(connection)))
        except psycopg.Error as error:
            raise DatabaseUnavailable(_first_line(error)) from error


def _run(account: InstanceAccount, argv: tuple[str, ...], what: str, timeout: float) -> None:
    try:
        result = process.run_process(account.wrap(argv), env=process.inherited_environment({}), timeout=timeout)
    except FileNotFoundError as exc:
        raise ScratchUnusable(f"{exc.filename} is not installed (set scratch.postgres.bin_dir)") from exc
    except process.ProcessStopped as exc:
        raise ScratchUnusable(f"{what} stopped: {exc.detail}") from exc
    if result.returncode != 0:
        said = next((line.strip() for line in reversed(result.stderr_tail) if line.strip()), "")
        raise ScratchUnusable(f"{what} failed (exit {result.returncode}): {said}")


def _log_tail(path: str) -> str:
    return first_problem_line(path, ("FATAL:", "ERROR:")) or last_line(path)


@contextlib.contextmanager
def throwaway_cluster(settings: PostgresScratch, scratch_dir: str, database: str) -> Iterator[PostgresRestoreTarget]:
    """A new cluster under ``scratch_dir`` with an empty ``database``; stopped on exit.

    Raises :class:`ScratchUnusable` when it cannot be set up (missing binaries,
    unreachable directory, disk full ...).
    """
    account = InstanceAccount.resolve(settings.run_as)
    root = os.path.join(scratch_dir, "pg")
    check_socket_path(os.path.join(root, f".s.PGSQL.{SOCKET_PORT}"))
    account.make_own_directory(root)
    account.check_reachable(root)
    data_dir = os.path.join(root, "data")
    log_file = os.path.join(root, "server.log")
    superuser = "postgres"
    _run(account, commands.make_initdb_command(settings.bin_dir, data_dir, superuser), "initdb", 300)
    try:
        _run(account, commands.make_pg_ctl_start_command(settings.bin_dir, data_dir, root, SOCKET_PORT, log_file,
                                                         START_TIMEOUT), "pg_ctl start", START_TIMEOUT + 10)
    except ScratchUnusable as error:
        raise ScratchUnusable(f"{error}; server log: {_log_tail(log_file)}") from error
    try:
        target = PostgresRestoreTarget(root, SOCKET_PORT, superuser, None, database, "throwaway instance",
                                       settings.tool("pg_restore"), log_file=log_file)
        try:
            with target.connect("postgres") as connection:
                connection.execute(f"CREATE DATABASE {quote_ident(database)} TEMPLATE template0")
        except psycopg.Error as exc:
            raise ScratchUnusable(f"cannot create the scratch database: {str(exc).strip()}") from exc
        yield target
    finally:
        with contextlib.suppress(ScratchUnusable):
            _run(account, commands.make_pg_ctl_stop_command(settings.bin_dir, data_dir), "pg_ctl stop", 60)


@contextlib.contextmanager
def scratch_server_database(settings: PostgresScratch, state: StateDir) -> Iterator[PostgresRestoreTarget]:
    """A new database on the configured scratch server; dropped on exit."""
    server = settings.server
    assert server is not None
    password = read_password(server.password_file)
    name = f"drill_verify_{secrets.token_hex(6)}"
    port = server.port or 5432
    user = server.user or "postgres"
    line = commands.make_pgpass_line(server.host, port, user, password or "")
    with private_file(state, "pgpass-", line) as passfile:
        target = PostgresRestoreTarget(server.host, port, user, password, name, f"scratch server {server.host}",
                                       settings.tool("pg_restore"), passfile if password else None)
        try:
            with target.connect("postgres") as connection:
                connection.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
        except psycopg.Error as exc:
            raise ScratchUnusable(f"cannot create a database on the scratch server: {str(exc).strip()}") from exc
        try:
            yield target
        finally:
            with contextlib.suppress(psycopg.Error), target.connect("postgres") as connection:
                connection.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


# -- the engine -------------------------------------------------------------------------

class PostgresEngine:
    kind = "postgres"
    manifest_schema = "drill.manifest.postgres/v1"
    checksum_method = "sum(hashtextextended(row::text, 0)) mod 2^64, in the snapshot pg_dump imported"

    def list_databases(self, target: TargetConfig) -> list[str]:
        """The databases to dump, after the cluster's global objects when those are wanted."""
        t = _target(target)
        extra = [GLOBALS] if t.globals else []
        if t.databases is not None:
            return [*extra, *t.databases]
        info = pg_snapshot.connection_info(t.host, t.port, t.user, "postgres", read_password(t.password_file))
        try:
            with psycopg.connect(**info) as connection:  # type: ignore[arg-type]
                rows = connection.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
                ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(_first_line(exc)) from exc
        return [*extra, *(str(r[0]) for r in rows)]

    def dump_filename(self, database: str) -> str:
        return "globals.sql" if database == GLOBALS else f"{database}.dump"

    def digest_only(self, database: str) -> bool:
        return database == GLOBALS

    @contextlib.contextmanager
    def capture(self, target: TargetConfig, database: str, state: StateDir) -> Iterator[Capture]:
        t = _target(target)
        password = read_password(t.password_file)
        passfile = (private_file(state, "pgpass-", commands.make_pgpass_line(t.host, t.port, t.user, password))
                    if password is not None else contextlib.nullcontext(None))
        with passfile as path:
            if database == GLOBALS:
                yield _GlobalsCapture(t, path)
                return
            info = pg_snapshot.connection_info(t.host, t.port, t.user, database, password)
            with pg_snapshot.SnapshotSession(info) as session:
                yield _DatabaseCapture(t, database, session, path)

    def restore_target(self, scratch: ScratchConfig, directory: str, database: str,
                       state: StateDir) -> contextlib.AbstractContextManager[RestoreTarget]:
        if scratch.postgres.server is not None:
            return scratch_server_database(scratch.postgres, state)
        return throwaway_cluster(scratch.postgres, directory, database)
