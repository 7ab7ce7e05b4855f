"""The machine's PostgreSQL for tests: throwaway databases and least-privileged roles, removed afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest

ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def admin_connection(dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(**{**ADMIN, "dbname": dbname}, autocommit=True)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required: {exc}", pytrace=False)


@contextmanager
def empty_database(prefix: str = "drill_test") -> Iterator[str]:
    """A new, empty database in the machine's PostgreSQL, as a URL; dropped (with any session left) afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class ThrowawayDatabase:
    name: str
    role: str
    password: str


SAMPLE_SCHEMA = """
CREATE TABLE accounts (id bigserial PRIMARY KEY, owner text NOT NULL, balance numeric(12,2),
                       ratio double precision, opened timestamptz DEFAULT now(), photo bytea, tags jsonb);
CREATE TABLE events (id bigserial PRIMARY KEY, account bigint REFERENCES accounts(id) ON DELETE CASCADE,
                     kind text, at timestamptz DEFAULT now(), note text);
CREATE INDEX events_kind ON events(kind);
"""


def fill(connection: psycopg.Connection[tuple[object, ...]], rows: int) -> None:
    connection.execute(
        "INSERT INTO accounts (owner, balance, ratio, photo, tags) "
        "SELECT 'owner ' || g, (g * 1.5)::numeric(12,2), CASE WHEN g %% 7 = 0 THEN NULL ELSE g / 3.0 END, "
        "CASE WHEN g %% 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END, "
        "jsonb_build_object('n', g, 'even', g %% 2 = 0) FROM generate_series(1, %s) g", (rows,))
    connection.execute(
        "INSERT INTO events (account, kind, note) SELECT 1 + (g %% %s), 'k' || (g %% 10), "
        "CASE WHEN g %% 3 = 0 THEN NULL ELSE 'note ' || g END FROM generate_series(1, %s) g", (rows, rows * 2))


@contextmanager
def throwaway_database(rows: int = 1000, *, privileged: bool = True) -> Iterator[ThrowawayDatabase]:
    """A new database with sample tables and a login role that may only read (pg_read_all_data)."""
    suffix = secrets.token_hex(4)
    db = ThrowawayDatabase(f"drill_test_{suffix}", f"drill_backup_{suffix}", secrets.token_hex(12))
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {db.name}")
        admin.execute(f"CREATE ROLE {db.role} LOGIN PASSWORD '{db.password}'")
        if privileged:
            admin.execute(f"GRANT pg_read_all_data TO {db.role}")
    try:
        with admin_connection(db.name) as connection:
            connection.execute(SAMPLE_SCHEMA)
            fill(connection, rows)
        yield db
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {db.role}")


@contextmanager
def password_cluster(parent: str, password: str) -> Iterator[str]:
    """A throwaway PostgreSQL cluster that asks for a password (scram-sha-256); yields its socket directory."""
    from agents import process
    from agents.scratch.account import InstanceAccount
    from agents.scratch.config import default_postgres_bin_dir
    from targets.postgres import commands

    account = InstanceAccount.resolve("postgres")
    root = os.path.join(parent, "pw-cluster")
    account.make_own_directory(root)
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as handle:
        handle.write(password + "\n")
    os.chown(pwfile, account.uid, account.gid)
    bin_dir = default_postgres_bin_dir()
    data = os.path.join(root, "data")
    initdb = [a for a in commands.make_initdb_command(bin_dir, data, "postgres") if a != "--auth=trust"]
    env = process.inherited_environment({})
    as_postgres = ("setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups", "--")
    for argv in (
        (*initdb, "--auth=scram-sha-256", f"--pwfile={pwfile}"),
        commands.make_pg_ctl_start_command(bin_dir, data, root, 5432, os.path.join(root, "log"), 60),
    ):
        result = process.run_process((*as_postgres, *argv), env=env, timeout=120)
        assert result.returncode == 0, result.stderr_tail
    try:
        yield root
    finally:
        process.run_process((*as_postgres, *commands.make_pg_ctl_stop_command(bin_dir, data)), env=env, timeout=60)


# -- MariaDB / MySQL --------------------------------------------------------------

MYSQL_ADMIN = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
# The least privileges of a backup user (also in the README).
MYSQL_BACKUP_GRANTS = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, PROCESS"


def mysql_admin(database: str | None = None) -> object:
    import pymysql

    try:
        return pymysql.connect(**MYSQL_ADMIN, database=database, autocommit=True, charset="utf8mb4")
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB/MySQL on 127.0.0.1:3306 (root, empty password) is required: {exc}", pytrace=False)


MYSQL_SCHEMA = (
    "CREATE TABLE accounts (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(100) NOT NULL, "
    "balance DECIMAL(12,2), ratio DOUBLE, opened TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP, photo BLOB, "
    "note TEXT CHARACTER SET latin1) ENGINE=InnoDB",
    "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, account BIGINT, kind VARCHAR(10), "
    "at DATETIME(3), KEY kind (kind)) ENGINE=InnoDB",
    "CREATE TABLE legacy (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM",
)


def fill_mysql(cursor: object, rows: int) -> None:
    c = cursor
    c.execute("SET SESSION max_recursive_iterations = 100000000")  # type: ignore[attr-defined]
    c.execute(  # type: ignore[attr-defined]
        "INSERT INTO accounts (owner, balance, ratio, photo, note) "
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
        "SELECT CONCAT('owner ', n), n * 1.5, IF(n %% 7 = 0, NULL, n / 3), IF(n %% 5 = 0, NULL, UNHEX(MD5(n))), "
        "IF(n %% 3 = 0, NULL, IF(n %% 3 = 1, '', CONCAT('caf', CHAR(233), ' ', n))) FROM g", (rows,))
    c.execute(  # type: ignore[attr-defined]
        "INSERT INTO events (account, kind, at) "
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
        "SELECT 1 + n %% %s, CONCAT('k', n %% 10), TIMESTAMP('2026-01-01') + INTERVAL n SECOND FROM g",
        (rows * 2, rows))
    c.execute("INSERT INTO legacy VALUES (1, 'old'), (2, NULL)")  # type: ignore[attr-defined]


@contextmanager
def throwaway_mysql_database(rows: int = 1000, *, privileged: bool = True) -> Iterator[ThrowawayDatabase]:
    """A new MariaDB database with sample tables and a backup user holding only the backup grants."""
    suffix = secrets.token_hex(4)
    db = ThrowawayDatabase(f"drill_test_{suffix}", f"drill_bk_{suffix}", secrets.token_hex(12))
    admin = mysql_admin()
    with admin.cursor() as c:  # type: ignore[attr-defined]
        c.execute(f"CREATE DATABASE {db.name}")
        c.execute(f"CREATE USER '{db.role}'@'%' IDENTIFIED BY '{db.password}'")
        if privileged:
            c.execute(f"GRANT {MYSQL_BACKUP_GRANTS} ON *.* TO '{db.role}'@'%'")
        c.execute(f"USE {db.name}")
        for statement in MYSQL_SCHEMA:
            c.execute(statement)
        fill_mysql(c, rows)
    try:
        yield db
    finally:
        with admin.cursor() as c:  # type: ignore[attr-defined]
            c.execute(f"DROP DATABASE IF EXISTS {db.name}")
            c.execute(f"DROP USER IF EXISTS '{db.role}'@'%'")
        admin.close()  # type: ignore[attr-defined]
