"""A MariaDB/MySQL database to restore one dump into: a throwaway instance, or a new database on a scratch server.

Throwaway instance: ``mariadb-install-db`` (or ``mysqld --initialize-insecure``)
into the scratch directory, the server started on a unix socket in that
directory with networking off, run as the instance account; killed on exit
(nothing in it needs a clean shutdown) and left for the caller to delete.
Scratch server: a database ``drill_verify_<random>`` created and dropped afterwards.

The restored tables are reported under the *original* database's name, so they
compare with the manifest wherever they were loaded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql

from agents import process
from agents.jobs.db_sources import private_file, read_password
from agents.scratch.account import InstanceAccount, ScratchUnusable, check_socket_path
from agents.scratch.config import MysqlScratch
from agents.scratch.logs import first_problem_line, last_line
from agents.state import StateDir
from targets.mysql import commands
from targets.mysql.checksum import quote_ident
from targets.mysql.snapshot import compute_checksums
from targets.tables import TableChecksum

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class MysqlRestoreTarget:
    """An empty database to load one dump into, and how to read it back."""

    connect_args: dict[str, Any]
    database: str
    original: str  # the database's name at backup time
    where: str
    client: str
    socket: str | None = None
    defaults_file: str | None = None
    log_file: str | None = None  # a throwaway instance's error log

    def server_problem(self) -> str:
        """The throwaway server's first [ERROR] line (why a load failed), or ''."""
        return first_problem_line(self.log_file, ("[ERROR]",)) if self.log_file else ""

    def load_command(self) -> tuple[tuple[str, ...], dict[str, str]]:
        argv = commands.make_load_command(self.client, database=self.database, socket=self.socket,
                                          defaults_file=self.defaults_file)
        env = process.inherited_environment({})
        env.pop("MYSQL_PWD", None)
        return argv, env

    def connect(self, database: str | None = None) -> Any:
        return pymysql.connect(**self.connect_args, database=database, autocommit=True, connect_timeout=10,
                               charset="utf8mb4")

    def checksums(self) -> tuple[str, list[TableChecksum], list[str]]:
        """(schema digest, table checksums, non-transactional tables) of the restored database."""
        connection = self.connect(self.database)
        try:
            with connection.cursor() as cursor:
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                schema, tables, non_transactional = compute_checksums(cursor, self.database)
        finally:
            connection.close()
        return schema, [TableChecksum(self.original, t.name, t.rows, t.checksum) for t in tables], non_transactional


def _create_database(target: MysqlRestoreTarget) -> None:
    try:
        connection = target.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {quote_ident(target.database)} CHARACTER SET utf8mb4")
        finally:
            connection.close()
    except pymysql.MySQLError as exc:
        raise ScratchUnusable(f"cannot create the scratch database: {exc}") from exc


def _log_tail(path: str) -> str:
    return first_problem_line(path, ("[ERROR]",)) or last_line(path)


@contextlib.contextmanager
def throwaway_instance(settings: MysqlScratch, scratch_dir: str, database: str) -> Iterator[MysqlRestoreTarget]:
    """A new server under ``scratch_dir`` with an empty ``database``; killed on exit.

    Raises :class:`ScratchUnusable` when it cannot be set up.
    """
    account = InstanceAccount.resolve(settings.run_as)
    root = os.path.join(scratch_dir, "my")
    socket = os.path.join(root, "mysqld.sock")
    check_socket_path(socket)
    account.make_own_directory(root)
    account.check_reachable(root)
    data_dir = os.path.join(root, "data")
    log_file = os.path.join(root, "server.log")
    try:
        installed = process.run_process(account.wrap(commands.make_install_db_command(settings.install_db, data_dir)),
                                        env=process.inherited_environment({}), timeout=300)
    except FileNotFoundError as exc:
        raise ScratchUnusable(f"{exc.filename} is not installed (set scratch.mysql.install_db)") from exc
    if installed.returncode != 0:
        said = next((line.strip() for line in reversed(installed.stderr_tail) if line.strip()), "")
        raise ScratchUnusable(f"{settings.install_db} failed (exit {installed.returncode}): {said}")
    argv = account.wrap(commands.make_server_command(settings.daemon, data_dir, socket,
                                                     os.path.join(root, "server.pid"), log_file))
    try:
        server = process.start_process(argv, env=process.inherited_environment({}))
    except FileNotFoundError as exc:
        raise ScratchUnusable(f"{exc.filename} is not installed (set scratch.mysql.daemon)") from exc
    try:
        target = MysqlRestoreTarget({"unix_socket": socket, "user": "root", "password": ""}, database, database,
                                    "throwaway instance", settings.client, socket=socket, log_file=log_file)
        _wait_until_accepting(target, server, log_file)
        _create_database(target)
        yield target
    finally:
        server.stop(hard=True)
        server.finish()


def _wait_until_accepting(target: MysqlRestoreTarget, server: process.StartedProcess, log_file: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.running():
            raise ScratchUnusable(f"the throwaway server exited at start: {_log_tail(log_file)}")
        with contextlib.suppress(pymysql.MySQLError):
            target.connect().close()
            return
        time.sleep(0.1)
    raise ScratchUnusable(f"the throwaway server did not accept connections within {START_TIMEOUT:.0f}s")


@contextlib.contextmanager
def scratch_server_database(settings: MysqlScratch, state: StateDir, original: str) -> Iterator[MysqlRestoreTarget]:
    """A new database on the configured scratch server; dropped on exit."""
    server = settings.server
    assert server is not None
    password = read_password(server.password_file)
    name = f"drill_verify_{secrets.token_hex(6)}"
    port = server.port or 3306
    user = server.user or "root"
    defaults_text = commands.make_client_defaults(server.host, port, user, password)
    with private_file(state, "my-", defaults_text) as defaults:
        target = MysqlRestoreTarget({"host": server.host, "port": port, "user": user, "password": password or ""},
                                    name, original, f"scratch server {server.host}", settings.client,
                                    defaults_file=defaults)
        _create_database(target)
        try:
            yield target
        finally:
            with contextlib.suppress(pymysql.MySQLError):
                connection = target.connect()
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
                connection.close()


def mysql_restore_target(
    settings: MysqlScratch, scratch_dir: str, database: str, state: StateDir
) -> contextlib.AbstractContextManager[MysqlRestoreTarget]:
    """The scratch server's new database when one is configured, else a throwaway instance."""
    if settings.server is not None:
        return scratch_server_database(settings, state, database)
    return throwaway_instance(settings, scratch_dir, database)
