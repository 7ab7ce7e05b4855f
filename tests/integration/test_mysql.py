"""MariaDB/MySQL dumps streamed into restic, with manifests exact under concurrent writes (both restic versions)."""

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
from targets.mysql.snapshot import compute_checksums
from tests.support.configs import Workspace
from tests.support.databases import ThrowawayDatabase, mysql_admin, throwaway_mysql_database
from tests.support.processes import kill_after_start


def _config(workspace: Workspace, db: ThrowawayDatabase, scratch: str | None = None, **target: object) -> str:
    password_file = os.path.join(workspace.root, "my.pw")
    with open(password_file, "w") as handle:
        handle.write(db.password + "\n")
    os.chmod(password_file, 0o600)
    spec = {"kind": "mysql", "host": "127.0.0.1", "port": 3306, "user": db.role,
            "password_file": password_file, "databases": [db.name], **target}
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"crm": spec},
                                  policies={"nightly": {"targets": ["crm"], "repository": "local"}},
                                  scratch={"directory": scratch} if scratch else None)
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    return path


def _restore_and_checksum(workspace: Workspace, path: str, snapshot_id: str, database: str) -> dict[str, object]:
    config = workspace.load(path)
    restored = f"drill_restore_{secrets.token_hex(4)}"
    admin = mysql_admin()
    with admin.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"CREATE DATABASE {restored}")
    try:
        env = {**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
               "RESTIC_PASSWORD_FILE": workspace.password_file}
        dump = subprocess.Popen([config.restic_binary, "dump", snapshot_id, f"/{database}.dump"], env=env,
                                stdout=subprocess.PIPE)
        subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", restored], stdin=dump.stdout, check=True,
                       capture_output=True)
        assert dump.wait() == 0
        with admin.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            schema, tables, non_transactional = compute_checksums(cursor, restored)
            cursor.execute("COMMIT")
        return {"schema_digest": schema, "non_transactional": non_transactional,
                "tables": [{"schema": database, "name": t.name, "rows": t.rows, "checksum": t.checksum}
                           for t in tables]}
    finally:
        with admin.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"DROP DATABASE IF EXISTS {restored}")
        admin.close()  # type: ignore[attr-defined]


def test_manifest_equals_the_dump_while_a_writer_keeps_writing(workspace: Workspace, scratch_dir: str) -> None:
    with throwaway_mysql_database(rows=20_000) as db:
        path = _config(workspace, db, scratch_dir)
        stop = threading.Event()
        writes = {"n": 0}

        def writer() -> None:
            rng = random.Random(2)
            connection = mysql_admin(db.name)
            with connection.cursor() as cursor:  # type: ignore[attr-defined]
                while not stop.is_set():
                    cursor.execute("START TRANSACTION")
                    cursor.execute("INSERT INTO accounts (owner, balance) VALUES (%s, %s)",
                                   (f"live {rng.random()}", rng.randint(1, 999)))
                    cursor.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (rng.randint(1, 20_000),))
                    cursor.execute("DELETE FROM events WHERE id = %s", (rng.randint(1, 40_000),))
                    cursor.execute("COMMIT")
                    writes["n"] += 1
            connection.close()  # type: ignore[attr-defined]

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.2)
            documents = [run_policy_backup(workspace.load(path), "nightly", level)[0].to_document()
                         for level in (Level.FULL, Level.INCREMENTAL, Level.DIFFERENTIAL)]
        finally:
            stop.set()
            thread.join()
        assert writes["n"] > 50, "the writer did not write during the backups"
        config = workspace.load(path)
        restic = Restic(config.restic_binary, config.repositories["local"])
        rows = []
        for document in documents:
            assert document["outcome"] == "success", document["findings"]
            # MyISAM is named, as a warning, in every record and manifest.
            assert [f["subject"] for f in document["findings"] if f["code"] == "non_transactional_table"] == [
                f"{db.name}.legacy"]
            manifest = json.loads(restic.dump(document["manifest"]["snapshot_id"], f"/{db.name}.manifest.json"))
            assert manifest["snapshot_id"] == document["snapshot"]["id"]
            assert manifest["non_transactional"] == ["legacy"]
            recomputed = _restore_and_checksum(workspace, path, document["snapshot"]["id"], db.name)
            assert recomputed["tables"] == manifest["tables"]  # zero mismatches, table by table
            assert recomputed["schema_digest"] == manifest["schema_digest"]
            rows.append({t["name"]: t["rows"] for t in manifest["tables"]}["accounts"])
            # No false alarm: the verify job, into a throwaway instance, agrees.
            [verified] = run_verify(config, VerifyRequest("local", "crm", document["snapshot"]["id"], "testhost",
                                                          None))
            assert verified.details["verdict"] == "passed", verified.findings
            assert verified.details["compared"]["rows"] == sum(t["rows"] for t in manifest["tables"])
            assert [f.code for f in verified.findings] == ["non_transactional_table"]
        assert os.listdir(scratch_dir) == []
        assert rows[0] < rows[-1]  # the backups really saw the writer's rows


def test_a_dump_killed_half_way_leaves_no_usable_snapshot(workspace: Workspace) -> None:
    with throwaway_mysql_database(rows=300_000) as db:
        path = _config(workspace, db)
        killer, killed = kill_after_start((b"mariadb-dump", b"mysqldump"), db.name)
        [record] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        killer.join()
        assert killed, "the dump tool was never seen running"
        document = record.to_document()
        assert document["outcome"] == "failed"
        assert "dump_failed" in {f["code"] for f in document["findings"]}
        config = workspace.load(path)
        snapshots = Restic(config.restic_binary, config.repositories["local"]).snapshots()
        assert [s for s in snapshots if s.tag_value("drill.job") == document["job"]["id"]] == []


def test_bad_input_fails_with_a_clear_finding(workspace: Workspace) -> None:
    with throwaway_mysql_database(rows=10) as db:
        path = _config(workspace, db, databases=[db.name, "no_such_database_here"])
        records = {r.details["target"]["database"]: r for r in run_policy_backup(workspace.load(path), "nightly",
                                                                                Level.FULL)}
        assert records[db.name].outcome == "success"
        missing = records["no_such_database_here"]
        assert missing.outcome == "failed"
        assert any(f.code == "database_unavailable" and "Unknown database" in f.message for f in missing.findings)

        with open(os.path.join(workspace.root, "my.pw"), "w") as handle:
            handle.write("wrong-password\n")
        [wrong] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)[:1]
        assert wrong.outcome == "failed"
        assert any("Access denied" in f.message for f in wrong.findings)
        assert "wrong-password" not in json.dumps(wrong.to_document())


def test_missing_privilege_fails(workspace: Workspace) -> None:
    with throwaway_mysql_database(rows=10, privileged=False) as db:
        path = _config(workspace, db)
        [record] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        assert record.outcome == "failed"
        assert any("denied" in f.message for f in record.findings), record.findings


def test_database_down_fails_with_database_unavailable(workspace: Workspace) -> None:
    from tests.support.components import free_port

    for kind in ("mysql", "postgres"):
        spec = {"kind": kind, "host": "127.0.0.1", "port": free_port(), "user": "backup", "databases": ["app"]}
        if kind == "postgres":
            spec["globals"] = False
        path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"db": spec},
                                      policies={"nightly": {"targets": ["db"], "repository": "local"}},
                                      name=f"{kind}.yaml")
        [record] = run_policy_backup(workspace.load(path), "nightly", Level.FULL)
        assert record.outcome == "failed"
        finding = next(f for f in record.findings if f.code == "database_unavailable")
        assert "refused" in finding.message.lower() or "can't connect" in finding.message.lower(), finding.message
