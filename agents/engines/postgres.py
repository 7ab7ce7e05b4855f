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
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import psycopg

from agents import process
from agents.engines.base import Capture, Command, RestoreTarget
from agents.engines.overtime import stop_after
from agents.scratch.account import InstanceAccount, ScratchUnusable, check_socket_path
from agents.scratch.config import PostgresScratch, ScratchConfig
from agents.scratch.logs import explain_tool_failure, first_problem_line, last_line, read_tail
from agents.scratch.reaper import note_process
from agents.scratch.sandbox import Sandbox
from agents.scratch.templates import make_data_dir
from agents.secretfiles import private_file, read_password
from agents.state import StateDir
from targets.postgres import checksum as pg_checksum
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
# How often a starting throwaway server is asked whether it accepts connections: it takes a tenth of a second or
# less from a template, and each try is a connect to a unix socket.
START_POLL = 0.02


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
        return TableManifest(schema, tuple(tables), method=pg_checksum.METHOD)


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
        return TableManifest("", (), method=pg_checksum.METHOD)


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
    sandbox: Sandbox  # where the loader runs
    network: bool = False  # the loader needs the network (a scratch server)
    passfile: str | None = None
    log_file: str | None = None  # a throwaway cluster's server log
    throwaway: bool = False  # a cluster of our own, started with commands.THROWAWAY_SETTINGS

    def checksum_problem(self, method: str) -> str | None:
        return None if method in pg_checksum.METHODS else f"no such PostgreSQL checksum method: {method[:80]!r}"

    def server_problem(self) -> str:
        return first_problem_line(self.log_file, ("PANIC:", "FATAL:", "ERROR:")) if self.log_file else ""

    def server_log(self) -> str:
        return read_tail(self.log_file) if self.log_file else ""

    def load_command(self, tables: int) -> Command:
        # One transaction only in a throwaway cluster: its lock table is sized for it (a scratch server's is not
        # ours to know), and its wal_level=minimal then skips the WAL of the tables' data.
        single = self.throwaway and tables <= commands.SINGLE_TRANSACTION_TABLES
        argv = commands.make_pg_restore_command(self.pg_restore, host=self.host, port=self.port, user=self.user,
                                                database=self.database, single_transaction=single)
        env = {"PGPASSFILE": self.passfile} if self.passfile else {}
        return self.sandbox.wrap(argv, network=self.network), process.inherited_environment(env)

    def connect(self, database: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True, connect_timeout=10)

    def checksums(self, method: str, columns_digested: Collection[str] = (),
                  timeout: float | None = None) -> TableManifest:
        """The restored tables' checksums (PostgreSQL has one ``method``), the server's work cancelled after
        ``timeout`` seconds. Raises :class:`ChecksumsTookTooLong`, else :class:`DatabaseUnavailable`."""
        if method not in pg_checksum.METHODS:
            raise DatabaseUnavailable(f"no such PostgreSQL checksum method: {method[:80]!r}")
        if columns_digested:  # PostgreSQL sums every row whole; a manifest that says otherwise was not made here
            raise DatabaseUnavailable("the manifest says tables were summed with their columns digested, which "
                                      "PostgreSQL checksums never are")
        try:
            with (self.connect(self.database) as connection,
                  stop_after(timeout, lambda: connection.cancel_safe(timeout=10), "checksums", _first_line)):
                pg_snapshot.begin_canonical_snapshot(connection)
                return TableManifest(pg_snapshot.compute_schema_digest(connection),
                                     tuple(pg_snapshot.compute_table_checksums(connection)), method=method)
        except psycopg.Error as error:
            raise DatabaseUnavailable(_first_line(error)) from error


def _run(argv: tuple[str, ...], what: str, timeout: float) -> None:
    try:
        result = process.run_process(argv, env=process.inherited_environment({}), timeout=timeout)
    except FileNotFoundError as exc:
        raise ScratchUnusable(f"{exc.filename} is not installed (set scratch.postgres.bin_dir)") from exc
    except process.ProcessStopped as exc:
        raise ScratchUnusable(f"{what} stopped: {exc.detail}") from exc
    if result.returncode != 0:
        raise ScratchUnusable(f"{what} failed (exit {result.returncode}): {explain_tool_failure(result.stderr_tail)}")


# What the server logs for each try to connect while it starts (the agent tries every START_POLL seconds): never the
# reason it stopped.
_STARTING_UP = "the database system is starting up"


def _log_tail(path: str) -> str:
    return first_problem_line(path, ("FATAL:", "PANIC:", "ERROR:"), ignore=(_STARTING_UP,)) or last_line(path)


def _wait_until_accepting(target: PostgresRestoreTarget, server: process.StartedProcess, log_file: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.running():
            said = _log_tail(log_file) or explain_tool_failure(server.finish()[1])
            raise ScratchUnusable(f"the throwaway cluster exited at start: {said}")
        try:
            target.connect("postgres").close()
            return
        except psycopg.Error:
            time.sleep(START_POLL)
    raise ScratchUnusable(f"the throwaway cluster did not accept connections within {START_TIMEOUT:.0f}s")


@contextlib.contextmanager
def throwaway_cluster(settings: PostgresScratch, scratch_dir: str, database: str,
                      templates: str | None = None) -> Iterator[PostgresRestoreTarget]:
    """A new cluster under ``scratch_dir`` with an empty ``database``, in the sandbox; killed on exit.

    ``initdb`` (an empty cluster: no tenant data) runs in the sandbox with a shell -- or its output, kept in
    ``templates`` the first time, is unpacked (:mod:`agents.scratch.templates`); the server, which loads the
    tenant's dump, runs in the sandbox without one. Raises :class:`ScratchUnusable` when it cannot be set up
    (missing binaries, a disk full, an account that may not run tenant data ...).
    """
    account = InstanceAccount.resolve(settings.run_as)
    root = os.path.join(scratch_dir, "pg")
    check_socket_path(os.path.join(root, f".s.PGSQL.{SOCKET_PORT}"))
    account.make_own_directory(root)
    sandbox = Sandbox.prepare(account, root, os.path.join(scratch_dir, "etc"))
    data_dir = os.path.join(root, "data")
    log_file = os.path.join(root, "server.log")
    initdb = commands.make_initdb_command(settings.bin_dir, data_dir, "postgres")
    make_data_dir(templates, "postgres", initdb, data_dir, [initdb[0], settings.tool("postgres")],
                  ("PG_VERSION", "global/pg_control", "base"), sandbox,
                  lambda: _run(sandbox.wrap(initdb, with_shell=True), "initdb", 300))
    argv = sandbox.wrap(commands.make_server_command(settings.bin_dir, data_dir, root, SOCKET_PORT, root))
    try:
        server = process.start_process(argv, env=process.inherited_environment({}))
    except FileNotFoundError as exc:
        raise ScratchUnusable(f"{exc.filename} is not installed (apt-get install bubblewrap)") from exc
    note_process(scratch_dir, server.pid)
    try:
        target = PostgresRestoreTarget(root, SOCKET_PORT, "postgres", None, database, "throwaway instance",
                                       settings.tool("pg_restore"), sandbox, log_file=log_file, throwaway=True)
        _wait_until_accepting(target, server, log_file)
        try:
            with target.connect("postgres") as connection:
                connection.execute(f"CREATE DATABASE {quote_ident(database)} TEMPLATE template0")
        except psycopg.Error as exc:
            raise ScratchUnusable(f"cannot create the scratch database: {str(exc).strip()}") from exc
        yield target
    finally:
        server.stop(hard=True)  # nothing in a throwaway cluster needs a clean shutdown
        server.finish()


@contextlib.contextmanager
def scratch_server_database(settings: PostgresScratch, scratch_dir: str) -> Iterator[PostgresRestoreTarget]:
    """A new database on the configured scratch server; dropped on exit. The loader runs in the sandbox, with
    the network it needs to reach the server (the server itself is not ours to confine)."""
    server = settings.server
    assert server is not None
    account = InstanceAccount.resolve(settings.run_as)
    root = os.path.join(scratch_dir, "loader")
    account.make_own_directory(root)
    sandbox = Sandbox.prepare(account, root, os.path.join(scratch_dir, "etc"))
    password = read_password(server.password_file)
    name = f"drill_verify_{secrets.token_hex(6)}"
    port = server.port or 5432
    user = server.user or "postgres"
    passfile = None
    if password:  # the loader's own copy, readable by the sandbox account, removed with the scratch directory
        passfile = os.path.join(root, "pgpass")
        with open(os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            handle.write(commands.make_pgpass_line(server.host, port, user, password))
        if account.switch:
            os.chown(passfile, account.uid, account.gid)
    target = PostgresRestoreTarget(server.host, port, user, password, name, f"scratch server {server.host}",
                                   settings.tool("pg_restore"), sandbox, network=True, passfile=passfile)
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
    checksum_methods = pg_checksum.METHODS

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
            return scratch_server_database(scratch.postgres, directory)
        return throwaway_cluster(scratch.postgres, directory, database, state.sub("instance-templates"))

    # What the server or the loader says when the dump tried to run a program: the sandbox has none to run.
    escape_markers = ("could not execute command", "TO PROGRAM", "FROM PROGRAM")
