"""A tenant's dump tries to run code on the verify host: the sandbox contains it, and the verification says so.

The payloads of the attack report, against the real servers: a MariaDB dump starting with the client commands
``\\!`` and ``system``, and a PostgreSQL table whose CHECK constraint calls a function that runs
``COPY ... TO PROGRAM`` when it finds itself a superuser (which a restore as superuser would be). Afterwards
nothing outside the scratch directory was written, the instance ran as the dedicated account, and the
verification is not PASSED: ``dump_tried_to_escape`` names what the dump tried.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time

from agents.config.model import AgentConfig
from agents.contract.records import VerifyRecord
from agents.restic.runner import Restic
from policies.levels import Level
from tests.support.configs import Workspace
from tests.support.databases import ThrowawayDatabase, admin_connection, throwaway_database, throwaway_mysql_database
from tests.support.engines import instances_left, rewrite_dump
from tests.support.forgery import vouch_for
from tests.support.jobs import backup, codes, verify


def _config(workspace: Workspace, db: ThrowawayDatabase, kind: str, scratch: str) -> AgentConfig:
    password_file = os.path.join(workspace.root, "db.pw")
    with open(password_file, "w") as handle:
        handle.write(db.password + "\n")
    spec: dict[str, object] = {"kind": kind, "user": db.role, "password_file": password_file,
                               "databases": [db.name]}
    if kind == "postgres":
        spec["globals"] = False
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"app": spec},
                                  policies={"nightly": {"targets": ["app"], "repository": "local"}},
                                  scratch={"directory": scratch})
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    return config


def test_mariadb_client_commands_in_a_dump_are_refused_and_named(workspace_once: Workspace, scratch_dir: str) -> None:
    workspace = workspace_once
    outside = [f"/tmp/drill-pwned-{secrets.token_hex(4)}" for _ in range(2)]
    with throwaway_mysql_database(rows=20) as db:
        config = _config(workspace, db, "mysql", scratch_dir)
        [honest] = backup(config, "nightly", Level.FULL)
        assert honest.outcome == "success", honest.findings
        for spelling, target in (("\\!", outside[0]), ("system", outside[1])):
            hostile = f"{spelling} id > {target}\nCREATE TABLE accounts (id INT);\n".encode()
            vouch_for(config, rewrite_dump(config, db.name, hostile), database=db.name)
            [record] = verify(config, "app")
            assert record.verdict == "failed" and record.outcome == "failed"
            assert "dump_tried_to_escape" in codes(record), record.findings
            [said] = [f.message for f in record.findings if f.code == "dump_tried_to_escape"]
            assert "Not allowed in the sandbox mode" in said
    assert not any(os.path.exists(path) for path in outside), "the dump's command ran on the verify host"
    assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


def test_a_postgres_function_running_a_program_as_superuser_is_contained_and_named(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    workspace = workspace_once
    outside = f"/tmp/drill-pwned-{secrets.token_hex(4)}"
    with throwaway_database(rows=10) as db:
        with admin_connection(db.name) as admin:  # the tenant owns their schema; no superuser of theirs
            admin.execute(f"ALTER SCHEMA public OWNER TO {db.role}")
            admin.execute(f"GRANT CREATE ON SCHEMA public TO {db.role}")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=5432, user=db.role, password=db.password, dbname=db.name,
                             autocommit=True) as tenant:
            tenant.execute(f"""
                CREATE FUNCTION looks_fine(v int) RETURNS boolean LANGUAGE plpgsql AS $$
                BEGIN
                  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                    EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'id > {outside}');
                  END IF;
                  RETURN true;
                END $$""")
            tenant.execute("CREATE TABLE orders (id int CHECK (looks_fine(id)))")
            tenant.execute("INSERT INTO orders VALUES (1), (2)")  # as the tenant: the function does nothing
        config = _config(workspace, db, "postgres", scratch_dir)
        [honest] = backup(config, "nightly", Level.FULL)
        assert honest.outcome == "success", honest.findings  # the backup of such a database is ordinary
        [record] = verify(config, "app")
    assert record.verdict == "failed" and "dump_tried_to_escape" in codes(record), record.findings
    [said] = [f.message for f in record.findings if f.code == "dump_tried_to_escape"]
    assert "could not execute command" in said and outside in said
    assert not os.path.exists(outside), "the dump's program ran on the verify host"
    assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


def _verify_past_a_limit(workspace: Workspace, scratch_dir: str, hostile: bytes,
                         **limits: float) -> tuple[VerifyRecord, float, str]:
    """Back up a small MariaDB database honestly, vouch for ``hostile`` as its dump and verify it with the scratch
    ``limits``; the record, the seconds the verification took and its could_not_verify message."""
    with throwaway_mysql_database(rows=5) as db:
        config = _config(workspace, db, "mysql", scratch_dir)
        [honest] = backup(config, "nightly", Level.FULL)
        assert honest.outcome == "success", honest.findings
        vouch_for(config, rewrite_dump(config, db.name, hostile), database=db.name)
        config = dataclasses.replace(config, scratch=dataclasses.replace(config.scratch, **limits))
        started = time.monotonic()
        [record] = verify(config, "app")
    # (a rewritten dump is also not the one its manifest names: dump_snapshot_mismatch, a failure)
    assert record.verdict == "failed" and "could_not_verify" in codes(record), record.findings
    [said] = [f.message for f in record.findings if f.code == "could_not_verify"]
    assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []
    return record, time.monotonic() - started, said


def test_a_dump_that_stalls_its_loader_is_stopped_after_the_load_timeout(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    # A drill waits for every verification: a dump that sleeps in its loader must not hold it forever.
    _, seconds, said = _verify_past_a_limit(workspace_once, scratch_dir, b"SELECT SLEEP(600);\n", load_timeout=3)
    assert seconds < 120
    assert "scratch.load_timeout (3 s)" in said


def test_tables_made_slow_to_read_are_stopped_after_the_checksum_timeout(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    # A virtual column that builds 6 MB a row loads at once but takes minutes to checksum; the server is told to
    # stop (KILL), not merely stopped waiting for. The dump, loaded as root, also leaves root no more connections
    # than the checksums' two and the one that kills them: that one must have been opened beforehand.
    heavy = b"".join(
        b"CREATE TABLE heavy%d (id INT PRIMARY KEY, v LONGTEXT AS (REPEAT(SHA2(id, 512), 50000)) VIRTUAL);\n"
        b"INSERT INTO heavy%d (id) SELECT seq FROM seq_1_to_20000;\n" % (n, n) for n in (1, 2))  # both connections busy
    heavy += b"ALTER USER root@localhost WITH MAX_USER_CONNECTIONS 3;\n"
    record, seconds, said = _verify_past_a_limit(workspace_once, scratch_dir, heavy, checksum_timeout=2)
    assert seconds < 60
    assert "scratch.checksum_timeout (2 s)" in said, said
    assert "Lost connection" in said or "gone away" in said, said  # killed by the server, not by a limit of ours
    assert 2 <= record.timings.phases["compare"] < 30
