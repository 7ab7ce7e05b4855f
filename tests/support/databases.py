"""The machine's PostgreSQL for tests: throwaway databases and least-privileged roles, removed afterwards."""

from __future__ import annotations

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


@dataclass
class PgDatabase:
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
def throwaway_database(rows: int = 1000, *, privileged: bool = True) -> Iterator[PgDatabase]:
    """A new database with sample tables and a login role that may only read (pg_read_all_data)."""
    suffix = secrets.token_hex(4)
    db = PgDatabase(f"drill_test_{suffix}", f"drill_backup_{suffix}", secrets.token_hex(12))
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
