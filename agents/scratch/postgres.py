"""A PostgreSQL database to restore one dump into: a throwaway cluster, or a new database on a scratch server.

Throwaway cluster: ``initdb`` into the scratch directory, ``pg_ctl start`` with
its unix socket in that directory and no TCP listener at all (so no port can
clash and nothing is reachable from outside), run as the instance account;
stopped (immediate mode) and left for the caller to delete. Scratch server: a
database ``drill_verify_<random>`` created for this verification and dropped
afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from agents import process
from agents.jobs.db_sources import private_file, read_password
from agents.scratch.account import InstanceAccount, ScratchUnusable, check_socket_path
from agents.scratch.config import PostgresScratch
from agents.scratch.logs import first_problem_line, last_line
from agents.state import StateDir
from targets.postgres import commands
from targets.postgres.checksum import quote_ident
from targets.postgres.snapshot import begin_canonical_snapshot, compute_schema_digest, compute_table_checksums
from targets.tables import TableChecksum

SOCKET_PORT = 5432  # names the socket file only: the throwaway cluster listens on no TCP port
START_TIMEOUT = 60


@dataclass(frozen=True)
class PostgresRestoreTarget:
    """An empty database to load one dump into, and how to read it back."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    where: str  # for the record: "throwaway instance" or the scratch server
    pg_restore: str
    passfile: str | None = None
    log_file: str | None = None  # a throwaway cluster's server log

    def server_problem(self) -> str:
        """The throwaway server's first PANIC/FATAL/ERROR line (why a load failed), or ''."""
        return first_problem_line(self.log_file, ("PANIC:", "FATAL:", "ERROR:")) if self.log_file else ""

    def load_command(self) -> tuple[tuple[str, ...], dict[str, str]]:
        argv = commands.make_pg_restore_command(self.pg_restore, host=self.host, port=self.port, user=self.user,
                                                database=self.database)
        env = process.inherited_environment({"PGPASSFILE": self.passfile} if self.passfile else {})
        env.pop("PGPASSWORD", None)
        return argv, env

    def _connect(self, database: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True, connect_timeout=10)

    def checksums(self) -> tuple[str, list[TableChecksum], list[str]]:
        """(schema digest, table checksums, []) of the restored database, computed as at backup time."""
        with self._connect(self.database) as connection:
            begin_canonical_snapshot(connection)
            return compute_schema_digest(connection), compute_table_checksums(connection), []


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
            with target._connect("postgres") as connection:
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
            with target._connect("postgres") as connection:
                connection.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
        except psycopg.Error as exc:
            raise ScratchUnusable(f"cannot create a database on the scratch server: {str(exc).strip()}") from exc
        try:
            yield target
        finally:
            with contextlib.suppress(psycopg.Error), target._connect("postgres") as connection:
                connection.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def postgres_restore_target(
    settings: PostgresScratch, scratch_dir: str, database: str, state: StateDir
) -> contextlib.AbstractContextManager[PostgresRestoreTarget]:
    """The scratch server's new database when one is configured, else a throwaway cluster."""
    if settings.server is not None:
        return scratch_server_database(settings, state)
    return throwaway_cluster(settings, scratch_dir, database)
