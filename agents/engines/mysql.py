"""The MySQL/MariaDB engine: a dump whose transaction starts with the manifest's while writes are held, and a
throwaway server (or a scratch server) to verify in.

Capture: ``FLUSH TABLES WITH READ LOCK`` → the checksum transaction starts →
``mariadb-dump --single-transaction`` starts its own → once that shows in
``INNODB_TRX``, ``UNLOCK TABLES`` (``targets.mysql.snapshot``). Credentials reach
the dump tool through a 0600 ``--defaults-extra-file`` only.

Verify: ``mariadb-install-db`` (or ``mysqld --initialize-insecure``) into the
scratch directory, the server started on a unix socket there with networking
off, and the client loading the dump with ``--sandbox``, all in the sandbox of
``agents/scratch/sandbox.py`` as the dedicated account (the server and the client
without a shell); killed on exit (nothing in it needs a clean shutdown) and left
for the caller to delete. Or, with ``scratch.mysql.server``,
a database ``drill_verify_<random>`` created on that server and dropped
afterwards. The restored tables are reported under the *original* database's
name, so they compare with the manifest wherever they were loaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import pymysql

from agents import process
from agents.engines.base import Capture, Command, RestoreTarget
from agents.engines.overtime import stop_after
from agents.scratch.account import InstanceAccount, ScratchUnusable, check_socket_path
from agents.scratch.config import MysqlScratch, ScratchConfig
from agents.scratch.logs import explain_tool_failure, first_problem_line, last_line, read_tail
from agents.scratch.reaper import note_process
from agents.scratch.sandbox import Sandbox
from agents.scratch.templates import make_data_dir
from agents.secretfiles import private_file, read_password
from agents.state import StateDir
from targets.mysql import checksum, commands
from targets.mysql import snapshot as my_snapshot
from targets.mysql.checksum import quote_ident
from targets.mysql.config import MysqlTargetConfig
from targets.registry import TargetConfig
from targets.tables import DatabaseUnavailable, TableChecksum, TableManifest

START_TIMEOUT = 60.0
# How often a starting throwaway server is asked whether it accepts connections: it takes a tenth of a second or
# less from a template, and each try is a connect to a unix socket.
START_POLL = 0.02
CHECKSUM_CONNECTIONS = 2  # a restored database is summed on both cores of a small scratch host
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


def _target(target: TargetConfig) -> MysqlTargetConfig:
    assert isinstance(target, MysqlTargetConfig), f"{target.name} is not a mysql target"
    return target


def _tool_environment() -> dict[str, str]:
    env = process.inherited_environment({})
    env.pop("MYSQL_PWD", None)
    return env


# -- capture --------------------------------------------------------------------------

@dataclass
class _DatabaseCapture:
    target: MysqlTargetConfig
    database: str
    snapshot: my_snapshot.ConsistentSnapshot
    defaults_file: str
    label: str = "FLUSH TABLES WITH READ LOCK + START TRANSACTION WITH CONSISTENT SNAPSHOT"

    def preflight(self) -> str | None:
        return None

    def dump_command(self) -> Command:
        argv = commands.make_dump_command(self.target.dump, self.database, defaults_file=self.defaults_file)
        return argv, _tool_environment()

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        self.snapshot.release_when_dump_started(dump_running)

    def checksums(self) -> TableManifest:
        return self.snapshot.checksums()


# -- verify ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MysqlRestoreTarget:
    """An empty database to load one dump into, and how to read it back."""

    connect_args: dict[str, Any]
    database: str
    original: str  # the database's name at backup time
    where: str
    client: str
    sandbox: Sandbox  # where the loader runs
    network: bool = False  # the loader needs the network (a scratch server)
    socket: str | None = None
    defaults_file: str | None = None
    log_file: str | None = None  # a throwaway instance's error log

    def checksum_problem(self, method: str) -> str | None:
        if method not in checksum.METHODS:
            return f"no such MySQL/MariaDB checksum method: {method[:80]!r}"
        if checksum.split_method(method)[0] != checksum.CRC_PAIR:
            return None
        try:
            connection = self.connect(self.database)
            try:
                with connection.cursor() as cursor:
                    if my_snapshot.crc32c_available(cursor):
                        return None
            finally:
                connection.close()
        except pymysql.MySQLError as error:
            raise DatabaseUnavailable(str(error)) from error
        return ("the manifest's checksums use CRC32C, which this server does not have (MariaDB 10.8 or later has "
                "it)")

    def server_problem(self) -> str:
        return first_problem_line(self.log_file, ("[ERROR]",)) if self.log_file else ""

    def server_log(self) -> str:
        return read_tail(self.log_file) if self.log_file else ""

    def load_command(self, tables: int) -> Command:
        argv = commands.make_load_command(self.client, database=self.database, socket=self.socket,
                                          defaults_file=self.defaults_file, sandbox=client_has_sandbox(self.client))
        return self.sandbox.wrap(argv, network=self.network), _tool_environment()

    def connect(self, database: str | None = None, *, io_timeout: float | None = None) -> Any:
        """A connection; ``io_timeout``: seconds a read or write on it may wait (None: no limit)."""
        return pymysql.connect(**self.connect_args, database=database, autocommit=True, connect_timeout=10,
                               read_timeout=io_timeout, write_timeout=io_timeout, charset="utf8mb4")

    def checksums(self, method: str, columns_digested: Collection[str] = (),
                  timeout: float | None = None) -> TableManifest:
        """The restored tables' checksums by ``method``, two connections sharing the work (nothing else writes),
        both killed after ``timeout`` seconds.

        Raises :class:`ChecksumsTookTooLong`, else :class:`DatabaseUnavailable`, also when the server lacks a
        function the method needs.
        """
        connections: list[Any] = []  # the checksums' own
        killer: Any = None  # the one that kills them when their time is up; never given work
        try:
            for _ in range(CHECKSUM_CONNECTIONS):
                connections.append(self.connect(self.database))
            # The killer is opened now: the dump ran as root and may have limited root's connections
            # (ALTER USER ... MAX_USER_CONNECTIONS) so that none could be opened when the time is up.
            if timeout is not None:
                killer = self.connect(io_timeout=10)
            stop = _Stopper(killer, connections) if killer is not None else (lambda: None)
            with stop_after(timeout, stop, "checksums"):
                cursors = [connection.cursor() for connection in connections]
                for cursor in cursors:
                    cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                found = my_snapshot.compute_checksums(cursors, self.database, method, columns_digested)
        except pymysql.MySQLError as error:
            raise DatabaseUnavailable(str(error)) from error
        finally:
            for connection in (*connections, *([killer] if killer is not None else [])):
                with contextlib.suppress(pymysql.MySQLError):
                    connection.close()
        tables = tuple(TableChecksum(self.original, t.name, t.rows, t.checksum, t.columns_digested)
                       for t in found.tables)
        return TableManifest(found.schema_digest, tables, found.non_transactional, method=method)


_NO_SUCH_THREAD = 1094  # "Unknown thread id"


class _Stopper:
    """Ends checksum connections whose time ran out: ``KILL CONNECTION`` (a killed connection runs no next
    statement either) through ``killer``, opened beforehand; when that fails, or the server has not ended them
    after :data:`CUT_AFTER` tries, their sockets are shut on our side, so the reads waiting on them end."""

    CUT_AFTER = 10

    def __init__(self, killer: Any, connections: list[Any]) -> None:
        self.killer = killer
        self.connections = connections
        self.tries = 0

    def __call__(self) -> None:
        """Raises ``pymysql.MySQLError`` when the KILL could not be sent (the sockets are shut first)."""
        self.tries += 1
        try:
            with self.killer.cursor() as cursor:
                for connection in self.connections:
                    try:
                        cursor.execute(f"KILL CONNECTION {int(connection.thread_id())}")
                    except pymysql.MySQLError as error:
                        if not error.args or error.args[0] != _NO_SUCH_THREAD:  # else: ended already
                            raise
        except pymysql.MySQLError:
            self._cut()
            raise
        if self.tries > self.CUT_AFTER:
            self._cut()

    def _cut(self) -> None:
        for connection in self.connections:
            # pymysql has no public way to end a read another thread waits in; shutting the socket does.
            sock = getattr(connection, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@functools.lru_cache(maxsize=8)
def client_has_sandbox(client: str) -> bool:
    """Whether the client knows ``--sandbox`` (MariaDB 10.5.25, 10.6.18, 10.11.8 and later): no ``\\!``, no
    ``system``, no ``source`` of a file while it loads a dump."""
    try:
        result = process.run_process((client, "--help"), env=_tool_environment(), timeout=30)
    except (FileNotFoundError, process.ProcessStopped):
        return False
    return "--sandbox" in result.stdout


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
def throwaway_instance(settings: MysqlScratch, scratch_dir: str, database: str,
                       templates: str | None = None) -> Iterator[MysqlRestoreTarget]:
    """A new server under ``scratch_dir`` with an empty ``database``, in the sandbox; killed on exit.

    The installer (an empty data directory: no tenant data) runs in the sandbox with a shell -- or its output, kept
    in ``templates`` the first time, is unpacked (:mod:`agents.scratch.templates`); the server and the client that
    load the tenant's dump run in it without one. Raises :class:`ScratchUnusable` when it cannot be set up.
    """
    account = InstanceAccount.resolve(settings.run_as)
    root = os.path.join(scratch_dir, "my")
    socket = os.path.join(root, "mysqld.sock")
    check_socket_path(socket)
    account.make_own_directory(root)
    sandbox = Sandbox.prepare(account, root, os.path.join(scratch_dir, "etc"))
    data_dir = os.path.join(root, "data")
    log_file = os.path.join(root, "server.log")
    installer = commands.make_install_db_command(settings.install_db, data_dir)

    def install() -> None:
        try:
            installed = process.run_process(sandbox.wrap(installer, with_shell=True),
                                            env=process.inherited_environment({}), timeout=300)
        except FileNotFoundError as exc:
            raise ScratchUnusable(f"{exc.filename} is not installed (apt-get install bubblewrap)") from exc
        if installed.returncode != 0:
            said = explain_tool_failure([*installed.stderr_tail, *installed.stdout.splitlines()[-20:]])
            raise ScratchUnusable(f"{settings.install_db} failed (exit {installed.returncode}): {said}")

    make_data_dir(templates, "mysql", installer, data_dir, [settings.install_db, settings.daemon],
                  ("mysql", "ibdata1"), sandbox, install)
    argv = sandbox.wrap(commands.make_server_command(settings.daemon, data_dir, socket,
                                                     os.path.join(root, "server.pid"), log_file))
    server = process.start_process(argv, env=process.inherited_environment({}))
    note_process(scratch_dir, server.pid)
    try:
        target = MysqlRestoreTarget({"unix_socket": socket, "user": "root", "password": ""}, database, database,
                                    "throwaway instance", settings.client, sandbox, socket=socket, log_file=log_file)
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
            said = _log_tail(log_file) or explain_tool_failure(server.finish()[1])
            raise ScratchUnusable(f"the throwaway server exited at start: {said}")
        with contextlib.suppress(pymysql.MySQLError):
            target.connect().close()
            return
        time.sleep(START_POLL)
    raise ScratchUnusable(f"the throwaway server did not accept connections within {START_TIMEOUT:.0f}s")


@contextlib.contextmanager
def scratch_server_database(settings: MysqlScratch, scratch_dir: str, original: str
                            ) -> Iterator[MysqlRestoreTarget]:
    """A new database on the configured scratch server; dropped on exit. The client runs in the sandbox, with the
    network it needs to reach the server (the server itself is not ours to confine)."""
    server = settings.server
    assert server is not None
    account = InstanceAccount.resolve(settings.run_as)
    root = os.path.join(scratch_dir, "loader")
    account.make_own_directory(root)
    sandbox = Sandbox.prepare(account, root, os.path.join(scratch_dir, "etc"))
    password = read_password(server.password_file)
    name = f"drill_verify_{secrets.token_hex(6)}"
    port = server.port or 3306
    user = server.user or "root"
    defaults = os.path.join(root, "client.cnf")  # the client's own copy, removed with the scratch directory
    with open(os.open(defaults, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        handle.write(commands.make_client_defaults(server.host, port, user, password))
    if account.switch:
        os.chown(defaults, account.uid, account.gid)
    target = MysqlRestoreTarget({"host": server.host, "port": port, "user": user, "password": password or ""},
                                name, original, f"scratch server {server.host}", settings.client, sandbox,
                                network=True, defaults_file=defaults)
    _create_database(target)
    try:
        yield target
    finally:
        with contextlib.suppress(pymysql.MySQLError):
            connection = target.connect()
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
            connection.close()


# -- the engine -------------------------------------------------------------------------

class MysqlEngine:
    kind = "mysql"
    manifest_schema = "drill.manifest.mysql/v1"
    checksum_methods = checksum.METHODS

    def list_databases(self, target: TargetConfig) -> list[str]:
        t = _target(target)
        if t.databases is not None:
            return list(t.databases)
        connection = my_snapshot.connect(t.host, t.port, t.user, read_password(t.password_file))
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW DATABASES")
                names = [str(r[0]) for r in cursor.fetchall()]
        finally:
            connection.close()
        return [n for n in names if n not in SYSTEM_DATABASES]

    def dump_filename(self, database: str) -> str:
        return f"{database}.dump"

    def digest_only(self, database: str) -> bool:
        return False

    @contextlib.contextmanager
    def capture(self, target: TargetConfig, database: str, state: StateDir) -> Iterator[Capture]:
        t = _target(target)
        password = read_password(t.password_file)
        defaults = commands.make_client_defaults(t.host, t.port, t.user, password)
        with private_file(state, "my-", defaults) as path, \
                my_snapshot.ConsistentSnapshot(t.host, t.port, t.user, password, database) as snapshot:
            yield _DatabaseCapture(t, database, snapshot, path)

    def restore_target(self, scratch: ScratchConfig, directory: str, database: str,
                       state: StateDir) -> contextlib.AbstractContextManager[RestoreTarget]:
        if scratch.mysql.server is not None:
            return scratch_server_database(scratch.mysql, directory, database)
        return throwaway_instance(scratch.mysql, directory, database, state.sub("instance-templates"))

    # What the client says when the dump holds a client command (\\!, system, source ...): --sandbox refuses it.
    escape_markers = ("Not allowed in the sandbox mode",)
