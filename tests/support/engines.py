"""What the engine conformance suite needs to know of each engine, to run the same cases on every one.

One :class:`EngineUnderTest` per registered database engine: how to make a
throwaway source database (with or without the backup grants), what a
concurrent writer does, how to restore a dump *independently* of drill (the
engine's own tools into the machine's server) and recompute its manifest, how
to make an altered copy of a dump, and the words each server uses for the
failures the suite provokes.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agents.config.model import AgentConfig
from agents.restic.runner import Restic
from targets.mysql.checksum import CRC_PAIR
from targets.mysql.snapshot import compute_checksums
from targets.postgres import checksum as pg_checksum
from targets.postgres.snapshot import begin_canonical_snapshot, compute_schema_digest, compute_table_checksums
from targets.tables import TableChecksum, TableManifest
from tests.support.databases import (
    ThrowawayDatabase,
    admin_connection,
    mysql_admin,
    throwaway_database,
    throwaway_mysql_database,
)


def _dump_stream(config: AgentConfig, snapshot_id: str, filename: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
           "RESTIC_PASSWORD_FILE": config.repositories["local"].password_file or ""}
    return subprocess.Popen([config.restic_binary, "dump", snapshot_id, f"/{filename}"], env=env,
                            stdout=subprocess.PIPE)


@dataclass(frozen=True)
class EngineUnderTest:
    kind: str
    make_database: Callable[..., contextlib.AbstractContextManager[ThrowawayDatabase]]
    dump_programs: tuple[bytes, ...]  # process names of the dump tool, to kill it mid-run
    # (statement run on a copy of the dump, the finding it must cause as (code, subject))
    deleted_row: tuple[str, tuple[str, str]]
    dropped_table: tuple[str, tuple[str, str]]
    refused_words: tuple[str, ...]  # how the server says "connection refused"
    denied_words: tuple[str, ...]  # how it says a privilege or password is missing
    write: Callable[[str, threading.Event, dict[str, int]], None]
    restore_and_checksum: Callable[[AgentConfig, str, str], TableManifest]
    altered_dump: Callable[[bytes, str], bytes]
    tables: int  # tables in the sample schema
    rows: Callable[[int], int]  # rows in the sample schema for ``rows`` accounts
    non_transactional: tuple[str, ...] = ()  # sample tables the engine cannot snapshot (named, as warnings)

    def target(self, db: ThrowawayDatabase, password_file: str | None, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "host": "127.0.0.1", "port": 5432 if self.kind == "postgres"
                                else 3306, "user": db.role, "databases": [db.name], **extra}
        if password_file is not None:
            spec["password_file"] = password_file
        if self.kind == "postgres":
            spec.setdefault("globals", False)
        return spec

    def subject(self, db: ThrowawayDatabase, subject: str) -> str:
        """A finding's subject: ``public.events`` (PostgreSQL) or ``<database>.events`` (MySQL)."""
        return subject.replace("{db}", db.name)


# -- PostgreSQL ----------------------------------------------------------------------

def _pg_write(database: str, stop: threading.Event, counter: dict[str, int]) -> None:
    rng = random.Random(1)
    with admin_connection(database) as connection:
        while not stop.is_set():
            with connection.transaction():
                connection.execute("INSERT INTO accounts (owner, balance) VALUES (%s, %s)",
                                   (f"live {rng.random()}", rng.randint(1, 999)))
                connection.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (rng.randint(1, 5000),))
                connection.execute("DELETE FROM events WHERE id = %s", (rng.randint(1, 10_000),))
            counter["n"] += 1


@contextlib.contextmanager
def _pg_scratch_copy(dump: bytes) -> Iterator[str]:
    name = f"drill_copy_{secrets.token_hex(4)}"
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "-h", "127.0.0.1", "-U", "postgres",
                        "-d", name], input=dump, check=True, capture_output=True)
        yield name
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _pg_restore_and_checksum(config: AgentConfig, snapshot_id: str, database: str) -> TableManifest:
    name = f"drill_restore_{secrets.token_hex(4)}"
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        dump = _dump_stream(config, snapshot_id, f"{database}.dump")
        subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "-h", "127.0.0.1", "-U", "postgres",
                        "-d", name], stdin=dump.stdout, check=True, capture_output=True)
        assert dump.wait() == 0
        with admin_connection(name) as connection:
            begin_canonical_snapshot(connection)
            return TableManifest(compute_schema_digest(connection), tuple(compute_table_checksums(connection)),
                                 method=pg_checksum.METHOD)
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _pg_altered(dump: bytes, statement: str) -> bytes:
    with _pg_scratch_copy(dump) as copy:
        with admin_connection(copy) as connection:
            connection.execute(statement)
        return subprocess.run(["pg_dump", "--format=custom", "-h", "127.0.0.1", "-U", "postgres", copy],
                              capture_output=True, check=True).stdout


POSTGRES = EngineUnderTest(
    kind="postgres", make_database=throwaway_database, dump_programs=(b"pg_dump",),
    deleted_row=("DELETE FROM accounts WHERE id = 7", ("row_count_mismatch", "public.accounts")),
    dropped_table=("DROP TABLE events", ("table_missing", "public.events")),
    refused_words=("refused",), denied_words=("permission denied", "password authentication failed"),
    write=_pg_write, restore_and_checksum=_pg_restore_and_checksum, altered_dump=_pg_altered,
    tables=2, rows=lambda n: n + 2 * n,
)


# -- MySQL / MariaDB -------------------------------------------------------------------

def _my_write(database: str, stop: threading.Event, counter: dict[str, int]) -> None:
    rng = random.Random(2)
    connection = mysql_admin(database)
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        while not stop.is_set():
            cursor.execute("START TRANSACTION")
            cursor.execute("INSERT INTO accounts (owner, balance) VALUES (%s, %s)",
                           (f"live {rng.random()}", rng.randint(1, 999)))
            cursor.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (rng.randint(1, 5000),))
            cursor.execute("DELETE FROM events WHERE id = %s", (rng.randint(1, 10_000),))
            cursor.execute("COMMIT")
            counter["n"] += 1
    connection.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _my_scratch_database() -> Iterator[tuple[str, Any]]:
    name = f"drill_copy_{secrets.token_hex(4)}"
    admin = mysql_admin()
    with admin.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name, admin
    finally:
        with admin.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()  # type: ignore[attr-defined]


def _my_restore_and_checksum(config: AgentConfig, snapshot_id: str, database: str) -> TableManifest:
    with _my_scratch_database() as (name, admin):
        dump = _dump_stream(config, snapshot_id, f"{database}.dump")
        subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", name], stdin=dump.stdout, check=True,
                       capture_output=True)
        assert dump.wait() == 0
        with admin.cursor() as cursor:
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            found = compute_checksums([cursor], name, CRC_PAIR)  # one connection: the unsplit path
            cursor.execute("COMMIT")
    # Reported under the original database's name, as the manifest names it.
    return TableManifest(found.schema_digest, tuple(TableChecksum(database, t.name, t.rows, t.checksum)
                                                    for t in found.tables), found.non_transactional, method=CRC_PAIR)


def _my_altered(dump: bytes, statement: str) -> bytes:
    with _my_scratch_database() as (name, admin):
        subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", name], input=dump, check=True,
                       capture_output=True)
        with admin.cursor() as cursor:
            cursor.execute(f"USE {name}")
            cursor.execute(statement)
        return subprocess.run(["mariadb-dump", "-h", "127.0.0.1", "-u", "root", "--single-transaction",
                               "--hex-blob", name], capture_output=True, check=True).stdout


MYSQL = EngineUnderTest(
    kind="mysql", make_database=throwaway_mysql_database, dump_programs=(b"mariadb-dump", b"mysqldump"),
    deleted_row=("DELETE FROM events WHERE id = 11", ("row_count_mismatch", "{db}.events")),
    dropped_table=("DROP TABLE events", ("table_missing", "{db}.events")),
    refused_words=("can't connect", "refused"), denied_words=("denied",),
    write=_my_write, restore_and_checksum=_my_restore_and_checksum, altered_dump=_my_altered,
    tables=3, rows=lambda n: n + 2 * n + 2, non_transactional=("legacy",),
)

ENGINES = {engine.kind: engine for engine in (POSTGRES, MYSQL)}


def rewrite_dump(config: AgentConfig, database: str, altered: bytes) -> str:
    """Write ``altered`` as a new dump snapshot carrying the original dump's tags (an attacker or a bug); its id.

    No record vouches for it: verification skips it (``unrecorded_snapshot``) unless ``forgery.vouch_for`` is used.
    """
    restic = Restic(config.restic_binary, config.repositories["local"])

    def dumps() -> list[str]:
        return [s.id for s in restic.snapshots() if s.tag_value("drill.part") == "dump"
                and s.tag_value("drill.database") == database]

    before = dumps()
    [original] = [s for s in restic.snapshots(snapshot_ids=before[:1])]  # the first: the honest backup's
    env = {**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
           "RESTIC_PASSWORD_FILE": config.repositories["local"].password_file or ""}
    tags = [arg for tag in original.tags for arg in ("--tag", tag)]
    subprocess.run([config.restic_binary, "backup", "-q", "--stdin", "--stdin-filename", f"{database}.dump",
                    "--host", original.hostname, *tags], input=altered, env=env, check=True)
    [rewritten] = [i for i in dumps() if i not in before]
    return rewritten


def original_dump(config: AgentConfig, database: str) -> bytes:
    restic = Restic(config.restic_binary, config.repositories["local"])
    original = next(s for s in restic.snapshots() if s.tag_value("drill.part") == "dump"
                    and s.tag_value("drill.database") == database)
    return restic.dump(original.id, f"/{database}.dump")


def instances_left(scratch_dir: str) -> list[str]:
    """Command lines of processes still running out of ``scratch_dir`` (a throwaway server left behind)."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as handle:
            line = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if scratch_dir in line:
                left.append(line)
    return left
