"""Pure parts of the postgres target: pg_dump commands, checksum SQL, config."""

from __future__ import annotations

import pathlib
from typing import cast

from agents.config.model import validate_config
from agents.engines.postgres import PostgresRestoreTarget
from agents.scratch.sandbox import Sandbox
from targets.postgres import checksum, commands


def test_pg_dump_command_uses_the_exported_snapshot_and_never_a_password() -> None:
    argv = commands.make_pg_dump_command("pg_dump", host="127.0.0.1", port=5433, user="backup", database="app",
                                         snapshot="00000003-0000001B-1")
    assert argv == ("pg_dump", "--format=custom", "--no-password", "--snapshot=00000003-0000001B-1",
                    "--host", "127.0.0.1", "--port", "5433", "--username", "backup", "--dbname", "app")
    assert "--username" not in commands.make_pg_dump_command("pg_dump", host="/run/postgresql", port=5432,
                                                             user=None, database="app", snapshot="s")


def test_globals_command_never_dumps_password_hashes() -> None:
    argv = commands.make_pg_dumpall_globals_command("/opt/pg/bin/pg_dumpall", host="h", port=5432, user="backup")
    assert argv[:4] == ("/opt/pg/bin/pg_dumpall", "--globals-only", "--no-role-passwords", "--no-password")


def test_pg_dump_version_parsing() -> None:
    assert commands.parse_pg_dump_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == 15
    assert commands.parse_pg_dump_major("pg_dump (PostgreSQL) 11.22") == 11
    assert commands.parse_pg_dump_major("something else") is None


def test_checksum_sql_quotes_identifiers_and_is_order_independent() -> None:
    sql = checksum.make_table_checksum_sql('we"ird', "Table Name")
    assert 'FROM ONLY "we""ird"."Table Name" AS t' in sql
    assert "sum(hashtextextended(t::text, 0))" in sql  # a sum: independent of row order
    assert str(2**64) in sql
    assert checksum.make_settings_sql()[0] == "SET LOCAL TimeZone TO 'UTC'"


def test_postgres_target_config(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pw").write_text("x\n")
    text = f"""
state_dir: /s
repositories: {{local: {{url: /r, password_file: {tmp_path}/pw}}}}
targets:
  appdb: {{kind: postgres, host: 127.0.0.1, port: 5432, user: backup, password_file: /etc/pg.pw,
          databases: [app, billing]}}
  every: {{kind: postgres, databases: all}}
policies: {{p: {{targets: [appdb, every], repository: local}}}}
"""
    config = validate_config("a.yaml", text)
    assert config.targets["appdb"].databases == ("app", "billing")  # type: ignore[union-attr]
    assert config.targets["every"].databases is None  # type: ignore[union-attr]


def test_pgpass_line_escapes_colons_and_backslashes() -> None:
    from targets.postgres.commands import make_pgpass_line

    assert make_pgpass_line("/run/pg", 5432, None, "a:b\\c") == "/run/pg:5432:*:*:a\\:b\\\\c\n"


def test_a_throwaway_cluster_loads_a_small_schema_in_one_transaction_and_a_scratch_server_never() -> None:
    class Unconfined:
        def wrap(self, argv: tuple[str, ...], network: bool = False) -> tuple[str, ...]:
            return argv

    def loader(throwaway: bool, tables: int) -> tuple[str, ...]:
        target = PostgresRestoreTarget("/scratch/pg", 5432, "postgres", None, "app", "here", "pg_restore",
                                       cast(Sandbox, Unconfined()), throwaway=throwaway)
        return target.load_command(tables)[0]

    assert "--single-transaction" in loader(True, commands.SINGLE_TRANSACTION_TABLES)
    assert "--single-transaction" not in loader(True, commands.SINGLE_TRANSACTION_TABLES + 1)  # its locks
    assert "--single-transaction" not in loader(False, 3)  # a scratch server's lock table is not ours to size
    server = commands.make_server_command("/usr/lib/postgresql/15/bin", "/d", "/s", 5432, "/l")
    # without WAL senders, as wal_level=minimal requires (else the cluster does not start)
    assert {"wal_level=minimal", "max_wal_senders=0", "fsync=off"} <= set(server)


def test_a_throwaway_cluster_that_stopped_at_start_is_explained_by_its_cause_not_by_the_agents_tries(tmp_path):
    from agents.engines.postgres import _log_tail

    log = tmp_path / "server.log"
    log.write_text("LOG:  starting PostgreSQL 15\n"
                   "FATAL:  the database system is starting up\n" * 3 +
                   "FATAL:  could not map anonymous shared memory: Cannot allocate memory\n"
                   "LOG:  database system is shut down\n")
    assert _log_tail(str(log)) == "FATAL:  could not map anonymous shared memory: Cannot allocate memory"
