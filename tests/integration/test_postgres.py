"""PostgreSQL dumps streamed into restic, with manifests exact under concurrent writes (both restic versions)."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import threading
import time

from agents.jobs.backup import run_policy_backup
from agents.jobs.verify import VerifyRequest, run_verify
from agents.restic.runner import Restic
from policies.levels import Level
from targets.postgres.snapshot import begin_canonical_snapshot, compute_schema_digest, compute_table_checksums
from tests.support.configs import Workspace
from tests.support.databases import ThrowawayDatabase, admin_connection, password_cluster, throwaway_database
from tests.support.processes import kill_after_start


def _config(workspace: Workspace, db: ThrowawayDatabase, scratch: str | None = None, **target: object) -> str:
    password_file = os.path.join(workspace.root, "pg.pw")
    with open(password_file, "w") as handle:
        handle.write(db.password + "\n")
    os.chmod(password_file, 0o600)
    spec = {"kind": "postgres", "host": "127.0.0.1", "port": 5432, "user": db.role,
            "password_file": password_file, "databases": [db.name], "globals": False, **target}
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"appdb": spec},
                                  policies={"nightly": {"targets": ["appdb"], "repository": "local"}},
                                  scratch={"directory": scratch} if scratch else None)
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    return path


def _restore_and_checksum(workspace: Workspace, path: str, snapshot_id: str, database: str) -> dict[str, object]:
    """Restore the dump into a throwaway database and recompute schema digest and table checksums there."""
    config = workspace.load(path)
    restored = f"drill_restore_{secrets.token_hex(4)}"
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {restored}")
    try:
        env = {**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
               "RESTIC_PASSWORD_FILE": workspace.password_file}
        dump = subprocess.Popen([config.restic_binary, "dump", snapshot_id, f"/{database}.dump"], env=env,
                                stdout=subprocess.PIPE)
        subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "-h", "127.0.0.1", "-U", "postgres",
                        "-d", restored], stdin=dump.stdout, check=True, capture_output=True)
        assert dump.wait() == 0
        with admin_connection(restored) as connection:
            begin_canonical_snapshot(connection)
            tables = compute_table_checksums(connection)
            schema = compute_schema_digest(connection)
        return {"schema_digest": schema,
                "tables": [{"schema": t.schema, "name": t.name, "rows": t.rows, "checksum": t.checksum}
                           for t in tables]}
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {restored} WITH (FORCE)")


def test_manifest_equals_the_dump_while_a_writer_keeps_writing(workspace: Workspace, scratch_dir: str) -> None:
    with throwaway_database(rows=20_000) as db:
        path = _config(workspace, db, scratch_dir)
        stop = threading.Event()
        writes = {"n": 0}

        def writer() -> None:
            rng = random.Random(1)
            with admin_connection(db.name) as connection:
                while not stop.is_set():
                    with connection.transaction():
                        connection.execute("INSERT INTO accounts (owner, balance) VALUES (%s, %s)",
                                           (f"live {rng.random()}", rng.randint(1, 999)))
                        connection.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s",
                                           (rng.randint(1, 20_000),))
                        connection.execute("DELETE FROM events WHERE id = %s", (rng.randint(1, 40_000),))
                    writes["n"] += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.2)
            results = []
            for level in (Level.FULL, Level.INCREMENTAL, Level.DIFFERENTIAL):
                [record] = run_policy_backup(workspace.load(path), "nightly", level)
                results.append(record.to_document())
        finally:
            stop.set()
            thread.join()
        assert writes["n"] > 50, "the writer did not write during the backups"
        for document in results:
            assert document["outcome"] == "success", document["findings"]
            snapshot_id = document["snapshot"]["id"]
            config = workspace.load(path)
            stored = Restic(config.restic_binary, config.repositories["local"]).dump(
                document["manifest"]["snapshot_id"], f"/{db.name}.manifest.json")
            manifest = json.loads(stored)
            assert manifest["snapshot_id"] == snapshot_id
            recomputed = _restore_and_checksum(workspace, path, snapshot_id, db.name)
            assert recomputed["tables"] == manifest["tables"]  # zero mismatches, table by table
            assert recomputed["schema_digest"] == manifest["schema_digest"]
            # No false alarm: the verify job, into a throwaway instance, agrees.
            [verified] = run_verify(config, VerifyRequest("local", "appdb", snapshot_id, "testhost", None))
            assert verified.details["verdict"] == "passed", verified.findings
            assert verified.details["compared"]["rows"] == sum(t["rows"] for t in manifest["tables"])
            assert verified.details["scratch"]["where"] == "throwaway instance"
        assert os.listdir(scratch_dir) == []
        counts = [{t["name"]: t["rows"] for t in json.loads(Restic(
            workspace.load(path).restic_binary, workspace.load(path).repositories["local"]).dump(
            d["manifest"]["snapshot_id"], f"/{db.name}.manifest.json"))["tables"]}["accounts"] for d in results]
        assert counts[0] < counts[-1]  # the backups really saw the writer's rows


def test_a_dump_killed_half_way_leaves_no_usable_snapshot(workspace: Workspace) -> None:
    with throwaway_database(rows=300_000) as db:
        path = _config(workspace, db)
        killer, killed = kill_after_start((b"pg_dump",), db.name)
        [record] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        killer.join()
        assert killed, "pg_dump was never seen running"
        document = record.to_document()
        assert document["outcome"] == "failed"
        assert "dump_failed" in {f["code"] for f in document["findings"]}
        assert document["snapshot"] is None and document["manifest"] is None
        config = workspace.load(path)
        snapshots = Restic(config.restic_binary, config.repositories["local"]).snapshots()
        assert [s for s in snapshots if s.tag_value("drill.job") == document["job"]["id"]] == []


def test_bad_input_fails_with_a_clear_finding(workspace: Workspace) -> None:
    with throwaway_database(rows=10) as db:
        path = _config(workspace, db, databases=[db.name, "no_such_database_here"])
        records = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        outcomes = {r.details["target"]["database"]: r for r in records}
        assert outcomes[db.name].outcome == "success"
        missing = outcomes["no_such_database_here"]
        assert missing.outcome == "failed"
        assert any(f.code == "database_unavailable" and "does not exist" in f.message for f in missing.findings)

        old = os.path.join(workspace.root, "pg_dump_11")
        with open(old, "w") as handle:  # a stand-in: an old pg_dump cannot be installed beside the real one
            handle.write("#!/bin/sh\necho 'pg_dump (PostgreSQL) 11.22'\n")
        os.chmod(old, 0o755)
        path = _config(workspace, db, pg_dump=old)
        [too_old] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        assert too_old.outcome == "failed"
        assert any(f.code == "dump_tool_too_old" for f in too_old.findings)


def test_missing_privilege_fails(workspace: Workspace) -> None:
    with throwaway_database(rows=10, privileged=False) as db:
        path = _config(workspace, db)
        [record] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        assert record.outcome == "failed"
        assert any("permission denied" in f.message for f in record.findings), record.findings


def test_dumps_replicate_with_their_manifests_and_retention_keeps_pairs(workspace: Workspace) -> None:
    with throwaway_database(rows=100) as db:
        password_file = os.path.join(workspace.root, "pg.pw")
        with open(password_file, "w") as handle:
            handle.write(db.password + "\n")
        spec = {"kind": "postgres", "user": db.role, "password_file": password_file, "databases": [db.name],
                "globals": True}
        path = workspace.write_config(
            {"local": workspace.local_repository("local"), "same-city": workspace.local_repository("far")},
            targets={"appdb": spec},
            policies={"nightly": {"targets": ["appdb"], "repository": "local", "replicate_to": ["same-city"],
                                  "retention": {"full": 1}}},
        )
        config = workspace.load(path)
        for repository in config.repositories.values():
            Restic(config.restic_binary, repository).init()
        runs = [run_policy_backup(config, "nightly", Level.FULL) for _ in range(2)]
        # Roles and tablespaces first, as their own dump and manifest, readable by the least-privileged role.
        globals_record = runs[1][0].to_document()  # the first run's was forgotten by retention
        assert globals_record["target"]["database"] == "@globals" and globals_record["outcome"] == "success"
        roles = Restic(config.restic_binary, config.repositories["local"]).dump(
            globals_record["snapshot"]["id"], "/globals.sql")
        assert f"CREATE ROLE {db.role};".encode() in roles
        assert b"PASSWORD" not in roles.replace(b"NOPASSWORD", b"")  # no password hashes
        first, second = (run[1].to_document() for run in runs)
        assert first["outcome"] == second["outcome"] == "success", second["findings"]
        copied = second["replication"][0]
        assert copied["verified"] is True and copied["copied"][0]["same_tree"] is True
        assert second["retention"]["local"]["forgotten"] == [first["snapshot"]["id"]]
        for name in ("local", "same-city"):
            restic = Restic(config.restic_binary, config.repositories[name])
            parts = sorted((s.tag_value("drill.database") == "@globals", s.tag_value("drill.part"))
                           for s in restic.snapshots())
            # the older pairs went together, for the database and for the globals
            assert parts == [(False, "dump"), (False, "manifest"), (True, "dump"), (True, "manifest")]
        listed = subprocess.run(["drill-agent", "snapshots", "--config", path, "--json"], capture_output=True,
                                text=True, check=True)
        rows = json.loads(listed.stdout)
        assert {(r["repository"], r["database"]) for r in rows} == {
            (site, name) for site in ("local", "same-city") for name in (db.name, "@globals")}
        assert all(r["manifest_snapshot_id"] for r in rows)


def test_a_wrong_password_fails_against_a_server_that_asks_for_one(workspace: Workspace, scratch_dir: str) -> None:
    """The machine's server trusts everyone, so a throwaway cluster with scram-sha-256 stands in."""
    with password_cluster(scratch_dir, "right-password") as socket_dir:
        for password, expected in (("wrong-password", "failed"), ("right-password", "success")):
            password_file = os.path.join(workspace.root, "pg.pw")
            with open(password_file, "w") as handle:
                handle.write(password + "\n")
            spec = {"kind": "postgres", "host": socket_dir, "port": 5432, "user": "postgres",
                    "password_file": password_file, "databases": ["postgres"], "globals": False}
            path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"appdb": spec},
                                          policies={"nightly": {"targets": ["appdb"], "repository": "local"}})
            config = workspace.load(path)
            Restic(config.restic_binary, config.repositories["local"]).init()
            [record] = run_policy_backup(config, "nightly", Level.FULL)
            assert record.outcome == expected, record.findings
            if expected == "failed":
                [finding] = record.findings
                assert finding.code == "database_unavailable"
                assert "password authentication failed" in finding.message
                assert "wrong-password" not in json.dumps(record.to_document())
