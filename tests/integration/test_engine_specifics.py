"""What only one database engine has: PostgreSQL's global objects and pg_dump version check, and the scratch
variants (a scratch server per engine, a full scratch disk). Everything every engine must do is in
``test_engines.py``, the conformance suite."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from agents.engines.base import ChecksumsTookTooLong, RestoreTarget
from agents.engines.postgres import PostgresEngine, PostgresRestoreTarget
from agents.jobs.restorestream import DumpStream
from agents.restic.exitcodes import ResticOutcome
from agents.restic.runner import Restic, ResticError
from agents.scratch.account import ScratchUnusable
from agents.scratch.sandbox import Sandbox
from agents.scratch.templates import InstanceTemplate
from policies.levels import Level
from targets.mysql import checksum as my_checksum
from targets.mysql import snapshot as my_snapshot
from targets.postgres import checksum as pg_checksum
from targets.tables import DatabaseUnavailable
from tests.support.configs import Workspace
from tests.support.databases import (
    ThrowawayDatabase,
    admin_connection,
    mysql_admin,
    throwaway_database,
    throwaway_mysql_database,
)
from tests.support.engines import instances_left
from tests.support.jobs import backup, codes, doc, verify


def _secret(workspace: Workspace, name: str, value: str) -> str:
    path = os.path.join(workspace.root, name)
    with open(path, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def _config(workspace: Workspace, db: ThrowawayDatabase, kind: str, scratch: dict[str, object]) -> str:
    spec: dict[str, object] = {"kind": kind, "user": db.role, "databases": [db.name],
                               "password_file": _secret(workspace, f"{kind}.pw", db.password)}
    if kind == "postgres":
        spec["globals"] = True
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"app": spec},
                                  policies={"nightly": {"targets": ["app"], "repository": "local"}},
                                  scratch=scratch)
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    [*_, record] = backup(config, "nightly", Level.FULL)
    assert record.outcome == "success", record.findings
    return path


def _verify(path: str, *extra: str) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "verify", "--config", path, "--repository", "local", "--target", "app",
         "--json", *extra], capture_output=True, text=True, check=False)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_postgres_global_objects_verify_by_digest_beside_the_dump(workspace_once: Workspace, scratch_dir: str) -> None:
    workspace = workspace_once
    with throwaway_database(rows=200) as db:
        path = _config(workspace, db, "postgres", {"directory": scratch_dir})
        code, documents = _verify(path, "--latest")
        assert code == 0, [d["findings"] for d in documents]
        by_database = {d["snapshot"]["database"]: d for d in documents}  # type: ignore[index]
        assert set(by_database) == {"@globals", db.name}
        assert by_database[db.name]["verdict"] == "passed"
        globals_ = by_database["@globals"]
        assert globals_["verdict"] == "passed" and globals_["compared"]["tables"] == 0  # type: ignore[index]
        assert globals_["dump"]["digest"] == globals_["dump"]["expected"]  # type: ignore[index]
        assert globals_["scratch"]["where"].startswith("none")  # type: ignore[index]
        assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


@contextlib.contextmanager
def _small_tmpfs(parent: str, size: str) -> Iterator[str]:
    path = os.path.join(parent, "small")
    os.mkdir(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
        os.rmdir(path)


def test_a_full_scratch_disk_could_not_verify_and_is_cleaned(workspace_once: Workspace, scratch_dir: str) -> None:
    workspace = workspace_once
    with throwaway_database(rows=300_000) as db:
        path = _config(workspace, db, "postgres", {"directory": scratch_dir})
        with _small_tmpfs(scratch_dir, "64m") as small:
            code, [document] = _verify(path, "--latest", "--database", db.name, "--scratch", small)
            assert code == 2
            assert document["verdict"] == "error" and document["outcome"] == "failed"
            [finding] = [f for f in document["findings"] if f["code"] == "could_not_verify"]  # type: ignore[attr-defined]
            assert "No space left on device" in finding["message"] or "could not extend" in finding["message"]
            assert os.listdir(small) == [] and instances_left(scratch_dir) == []


def test_a_scratch_server_gets_a_new_database_that_is_dropped(workspace_once: Workspace, scratch_dir: str) -> None:
    workspace = workspace_once
    role = f"drill_scratch_{secrets.token_hex(4)}"
    password = secrets.token_hex(10)
    with admin_connection() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    try:
        with throwaway_database(rows=300) as db:
            server = {"host": "127.0.0.1", "port": 5432, "user": role,
                      "password_file": _secret(workspace, "scratch.pw", password)}
            path = _config(workspace, db, "postgres", {"directory": scratch_dir, "postgres": {"server": server}})
            code, [document] = _verify(path, "--latest", "--database", db.name)
            assert code == 0, document["findings"]
            assert document["scratch"]["where"] == "scratch server 127.0.0.1"  # type: ignore[index]
            with admin_connection() as admin:
                left = admin.execute("SELECT count(*) FROM pg_database WHERE datdba = "
                                     "(SELECT oid FROM pg_roles WHERE rolname = %s)", (role,)).fetchone()
            assert left == (0,)
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_mariadb_scratch_server_gets_a_new_database_that_is_dropped(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    workspace = workspace_once
    with throwaway_mysql_database(rows=200) as db:
        server = {"host": "127.0.0.1", "port": 3306, "user": "root"}
        path = _config(workspace, db, "mysql", {"directory": scratch_dir, "mysql": {"server": server}})
        code, [document] = _verify(path, "--latest")
        assert code == 0, document["findings"]
        assert document["scratch"]["where"] == "scratch server 127.0.0.1"  # type: ignore[index]
        assert document["compared"]["rows"] == 200 + 400 + 2  # type: ignore[index]
        admin = mysql_admin()
        with admin.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute("SHOW DATABASES LIKE 'drill\\\\_verify\\\\_%'")
            assert cursor.fetchall() == ()
        admin.close()  # type: ignore[attr-defined]


def test_postgres_checksums_past_their_time_are_cancelled_on_the_server() -> None:
    # The restored database is a scratch server's here (the machine's PostgreSQL); what a verification does with the
    # stop (could_not_verify naming scratch.checksum_timeout) is tested on MariaDB in test_hostile_restores.
    with throwaway_database(rows=10) as db:
        with admin_connection(db.name) as admin:  # ≈ 200 MB of row text: a second or more to sum
            admin.execute("CREATE TABLE wide AS SELECT g AS id, repeat(md5(g::text), 150) AS body "
                          "FROM generate_series(1, 40000) g")
        target = PostgresRestoreTarget("127.0.0.1", 5432, "postgres", None, db.name, "scratch server 127.0.0.1",
                                       "pg_restore", cast(Sandbox, None))
        with pytest.raises(ChecksumsTookTooLong) as stopped:
            target.checksums(pg_checksum.METHOD, timeout=0.05)
        assert "canceling statement due to user request" in stopped.value.detail
        whole = target.checksums(pg_checksum.METHOD, timeout=60)  # time enough: the same sums, whole
        assert {t.name: t.rows for t in whole.tables}["wide"] == 40000


def test_a_pg_dump_older_than_the_server_is_refused(workspace: Workspace) -> None:
    old = os.path.join(workspace.root, "pg_dump_11")
    with open(old, "w") as handle:  # a stand-in: an old pg_dump cannot be installed beside the real one
        handle.write("#!/bin/sh\necho 'pg_dump (PostgreSQL) 11.22'\n")
    os.chmod(old, 0o755)
    with throwaway_database(rows=10) as db:
        spec = {"kind": "postgres", "user": db.role, "databases": [db.name], "globals": False, "pg_dump": old,
                "password_file": _secret(workspace, "pg.pw", db.password)}
        path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"app": spec},
                                      policies={"nightly": {"targets": ["app"], "repository": "local"}})
        config = workspace.load(path)
        Restic(config.restic_binary, config.repositories["local"]).init()
        [too_old] = backup(config, "nightly", Level.FULL)
        assert too_old.outcome == "failed" and codes(too_old) == {"dump_tool_too_old"}


def test_dumps_replicate_with_their_manifests_and_retention_keeps_pairs(workspace: Workspace) -> None:
    with throwaway_database(rows=100) as db:
        spec = {"kind": "postgres", "user": db.role, "password_file": _secret(workspace, "pg.pw", db.password),
                "databases": [db.name], "globals": True}
        path = workspace.write_config(
            {"local": workspace.local_repository("local"), "same-city": workspace.local_repository("far")},
            targets={"appdb": spec},
            policies={"nightly": {"targets": ["appdb"], "repository": "local", "replicate_to": ["same-city"],
                                  "retention": {"full": 1}}},
        )
        config = workspace.load(path)
        for repository in config.repositories.values():
            Restic(config.restic_binary, repository).init()
        runs = [backup(config, "nightly", Level.FULL) for _ in range(2)]
        # Roles and tablespaces first, as their own dump and manifest, readable by the least-privileged role.
        globals_record = doc(runs[1][0])  # the first run's was forgotten by retention
        assert globals_record["target"]["database"] == "@globals" and globals_record["outcome"] == "success"
        roles = Restic(config.restic_binary, config.repositories["local"]).dump(
            globals_record["snapshot"]["id"], "/globals.sql")
        assert f"CREATE ROLE {db.role};".encode() in roles
        assert b"PASSWORD" not in roles.replace(b"NOPASSWORD", b"")  # no password hashes
        first, second = (doc(run[1]) for run in runs)
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


def test_a_mariadb_without_crc32c_gets_the_md5_checksum_and_it_verifies(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = workspace_once
    # MySQL 8 has no CRC32C; this machine's MariaDB has, so the probe is told it failed. The MD5 method is also
    # what earlier backups' manifests name: their verification recomputes it.
    real_probe = my_snapshot.crc32c_available
    monkeypatch.setattr(my_snapshot, "crc32c_available", lambda cursor: False)
    with throwaway_mysql_database(rows=300) as db:
        path = _config(workspace, db, "mysql", {"directory": scratch_dir})
        config = workspace.load(path)
        [record] = [r for r in verify(config, "app") if r.database == db.name]
        assert record.verdict == "passed", record.findings
        assert record.compared.rows == 300 + 600 + 2
        restic = Restic(config.restic_binary, config.repositories["local"])
        [*_, backed_up] = backup(config, "nightly", Level.INCREMENTAL)
        manifest = json.loads(restic.dump(backed_up.manifest.snapshot_id,  # type: ignore[union-attr]
                                          f"/{db.name}.manifest.json"))
        assert manifest["checksum"] == my_checksum.MD5_PREFIX
        # A CRC manifest, and a scratch server without CRC32C: could not verify, said before the dump is loaded.
        monkeypatch.setattr(my_snapshot, "crc32c_available", real_probe)
        [*_, crc] = backup(config, "nightly", Level.FULL)
        monkeypatch.setattr(my_snapshot, "crc32c_available", lambda cursor: False)
        [refused] = verify(config, "app", snapshot=crc.snapshot.id)  # type: ignore[union-attr]
        assert refused.verdict == "error"
        assert [f.code for f in refused.findings] == ["could_not_verify"]
        assert "CRC32C" in refused.findings[0].message
        assert "restore" not in refused.timings.phases and "scratch_start" in refused.timings.phases


def test_a_mariadb_row_longer_than_max_allowed_packet_is_summed_with_its_columns_digested(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = workspace_once
    # A blob of 0.6 × the server's max_allowed_packet is stored whole, but its hex text (1.2 ×) is longer than the
    # server will build: summed the plain way, the row would be counted and not hashed.
    monkeypatch.setattr(my_checksum, "SPLIT_FROM_ROWS", 1)  # the digested table is summed in key ranges too
    digested_ranges: list[str] = []
    real_sql = my_checksum.make_table_checksum_sql

    def spied_sql(*args: Any, **kwargs: Any) -> str:
        if kwargs.get("columns_digested") and args[4]:
            digested_ranges.append(args[4])
        return real_sql(*args, **kwargs)

    monkeypatch.setattr(my_checksum, "make_table_checksum_sql", spied_sql)
    digested_method = my_checksum.CRC_PAIR + my_checksum.WITH_COLUMNS_DIGESTED
    with throwaway_mysql_database(rows=50) as db:
        admin: Any = mysql_admin(db.name)
        try:
            with admin.cursor() as cursor:
                cursor.execute("SELECT @@max_allowed_packet")
                blob_bytes = int(cursor.fetchone()[0]) * 6 // 10
                cursor.execute("CREATE TABLE documents (id INT PRIMARY KEY, body LONGBLOB, title VARCHAR(40))")
                cursor.execute("INSERT INTO documents VALUES (1, REPEAT(0xAB, %s), 'large'), (100, 'small', NULL)",
                               (blob_bytes,))
                cursor.execute("ANALYZE TABLE documents")  # the row estimate that decides the split
                cursor.fetchall()
            path = _config(workspace, db, "mysql", {"directory": scratch_dir})
            config = workspace.load(path)
            [record] = [r for r in backup(config, "nightly", Level.FULL) if r.target.database == db.name]
            assert [(f.code, f.subject) for f in record.findings if f.code == "columns_digested"] == [
                ("columns_digested", f"{db.name}.documents")]
            restic = Restic(config.restic_binary, config.repositories["local"])
            manifest = json.loads(restic.dump(record.manifest.snapshot_id,  # type: ignore[union-attr]
                                              f"/{db.name}.manifest.json"))
            assert manifest["checksum"] == digested_method  # an agent that cannot sum so does not know the name
            assert {t["name"] for t in manifest["tables"] if t.get("columns_digested")} == {"documents"}
            [verified] = [r for r in verify(config, "app") if r.database == db.name]
            assert verified.verdict == "passed", verified.findings
            assert len(digested_ranges) == 6  # two ranges in each of two backups and the verification
            # The digested sum still sees one byte of the long row change; summing it whole is refused, and so is
            # a manifest that marks tables digested under a method that does not.
            with admin.cursor() as cursor:
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                before = my_snapshot.compute_checksums([cursor], db.name, digested_method, {"documents"})
                cursor.execute("COMMIT")
                cursor.execute("UPDATE documents SET body = INSERT(body, %s, 1, 0xAC) WHERE id = 1",
                               (blob_bytes // 2,))
                after = my_snapshot.compute_checksums([cursor], db.name, digested_method, {"documents"})
                with pytest.raises(my_snapshot.RowsTooLong, match="documents"):
                    my_snapshot.compute_checksums([cursor], db.name, my_checksum.CRC_PAIR, ())
                with pytest.raises(DatabaseUnavailable, match="columns_digested"):
                    my_snapshot.compute_checksums([cursor], db.name, my_checksum.CRC_PAIR, {"documents"})
            [documents_before] = [t for t in before.tables if t.name == "documents"]
            [documents_after] = [t for t in after.tables if t.name == "documents"]
            assert documents_before.checksum == next(t["checksum"] for t in manifest["tables"]
                                                     if t["name"] == "documents")
            assert documents_after.rows == 2 and documents_after.checksum != documents_before.checksum
        finally:
            admin.close()


def test_a_dumps_manifest_is_read_beside_the_check_and_again_with_its_lock_when_that_failed(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A prune elsewhere, before the check took its lock, can remove what a lockless read reads; it cannot be
    # produced on demand, so the lockless read's failure is injected. It must cost a second read, not a finding.
    reads: list[bool] = []
    failing = [False]
    real_dump = Restic.dump

    def dump(self: Restic, snapshot_id: str, path: str, **options: Any) -> bytes:
        reads.append(bool(options.get("beside_check")))
        if options.get("beside_check") and failing[0]:
            raise ResticError(ResticOutcome.FATAL, "restic dump failed: pack not found (injected)")
        return real_dump(self, snapshot_id, path, **options)

    with throwaway_database(rows=200) as db:
        config = workspace_once.load(_config(workspace_once, db, "postgres", {"directory": scratch_dir}))
        monkeypatch.setattr(Restic, "dump", dump)
        [record] = verify(config, "app", database=db.name)
        assert record.verdict == "passed", record.findings
        assert reads == [True]  # beside the check only: no second, locked read
        failing[0] = True
        reads.clear()
        [record] = verify(config, "app", database=db.name)
        assert record.verdict == "passed" and "repository_damaged" not in codes(record), record.findings
        assert reads == [True, False]
        assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


def test_the_dumps_restic_starts_while_the_scratch_database_starts_and_stops_when_that_fails(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # restic derives its key and loads the index (a second or so) while the throwaway cluster starts; were it
    # started only once the cluster is up, the cluster's start below would wait in vain and fail the job.
    dumps: list[DumpStream] = []
    dump_started = threading.Event()
    real_init = DumpStream.__init__

    def init(self: DumpStream, *args: Any) -> None:
        real_init(self, *args)
        dumps.append(self)
        dump_started.set()

    real_target = PostgresEngine.restore_target
    failing = [False]

    @contextlib.contextmanager
    def restore_target(self: PostgresEngine, *args: Any) -> Iterator[RestoreTarget]:
        if not dump_started.wait(30):
            raise ScratchUnusable("the dump's restic did not start while the scratch database started")
        if failing[0]:
            raise ScratchUnusable("no room for a throwaway cluster (injected)")
        with real_target(self, *args) as target:
            yield target

    monkeypatch.setattr(DumpStream, "__init__", init)
    monkeypatch.setattr(PostgresEngine, "restore_target", restore_target)
    with throwaway_database(rows=200) as db:
        config = workspace_once.load(_config(workspace_once, db, "postgres", {"directory": scratch_dir}))
        [record] = verify(config, "app", database=db.name)
        assert record.verdict == "passed" and (record.compared.rows or 0) > 0, record.findings
        assert {"scratch_start", "restore", "compare"} <= set(record.timings.phases)
        # When the scratch database cannot start, the dump already running is stopped, unread.
        failing[0] = True
        dump_started.clear()
        [record] = verify(config, "app", database=db.name)
        assert record.verdict == "error" and "no room for a throwaway cluster" in record.findings[0].message
        stopped = dumps[-1]
        assert not stopped._dumping.running and "the dump is no longer needed" in str(stopped._dumping.failure())
        assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


def test_a_throwaway_cluster_loads_a_dump_in_one_transaction_without_wal(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaders: list[tuple[str, ...]] = []
    wal_levels: list[object] = []
    real_load_command = PostgresRestoreTarget.load_command

    def load_command(self: PostgresRestoreTarget, tables: int) -> tuple[tuple[str, ...], dict[str, str]]:
        with self.connect(self.database) as connection:
            wal_levels.append(connection.execute("SHOW wal_level").fetchone())
        command = real_load_command(self, tables)
        loaders.append(command[0])
        return command

    monkeypatch.setattr(PostgresRestoreTarget, "load_command", load_command)
    with throwaway_database(rows=200) as db:
        config = workspace_once.load(_config(workspace_once, db, "postgres", {"directory": scratch_dir}))
        [record] = verify(config, "app", database=db.name)
    assert record.verdict == "passed" and (record.compared.tables or 0) == 2, record.findings
    assert wal_levels == [("minimal",)]  # the cluster runs with the settings that make one transaction pay
    [loader] = loaders
    assert "--single-transaction" in loader


def test_a_mariadb_statement_that_cannot_be_killed_is_cut_off_on_the_agents_side() -> None:
    # The fault a real server will not produce on demand: a KILL that cannot be sent (here: the killer's own
    # connection is gone). The statement's socket is shut, so the thread waiting on it ends at once.
    import pymysql

    from agents.engines.mysql import _Stopper

    sleeper: Any = mysql_admin()
    killer: Any = mysql_admin()
    killer.close()
    ended: list[BaseException] = []

    def wait_on_the_server() -> None:
        try:
            sleeper.cursor().execute("SELECT SLEEP(20)")
        except pymysql.MySQLError as error:
            ended.append(error)

    waiting = threading.Thread(target=wait_on_the_server)
    waiting.start()
    time.sleep(0.3)
    with pytest.raises(pymysql.MySQLError):
        _Stopper(killer, [sleeper])()
    waiting.join(5)
    assert not waiting.is_alive() and len(ended) == 1


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_throwaway_instances_after_the_first_are_copies_of_the_installers_empty_data_directory(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    workspace = workspace_once
    unpacked: list[bool] = []
    real_unpack = InstanceTemplate.unpack

    def unpack(self: InstanceTemplate, data_dir: str, sandbox: Sandbox) -> bool:
        unpacked.append(real_unpack(self, data_dir, sandbox))
        return unpacked[-1]

    monkeypatch.setattr(InstanceTemplate, "unpack", unpack)
    databases = throwaway_database if kind == "postgres" else throwaway_mysql_database
    with databases(rows=100) as db:
        config = workspace.load(_config(workspace, db, kind, {"directory": scratch_dir}))
        records = [record for _ in range(2) for record in verify(config, "app", database=db.name)]
    assert [r.verdict for r in records] == ["passed", "passed"], [r.findings for r in records]
    assert unpacked == [False, True]  # the installer ran for the first instance only
    assert records[1].compared.rows == records[0].compared.rows and (records[1].compared.rows or 0) >= 100
    templates = os.path.join(config.state_dir, "instance-templates")
    [template] = os.listdir(templates)
    archive = os.stat(os.path.join(templates, template))
    assert template.startswith(f"{kind}-") and archive.st_mode & 0o777 == 0o600
    # What the installer made is mostly zeros, stored as holes: MariaDB's 114 MB (its redo log) in under 10 MB.
    assert archive.st_size < (10 << 20 if kind == "mysql" else 35 << 20)
    # Packed before any server ran on it: no tenant's data, no trace of a running server.
    with tarfile.open(os.path.join(templates, template)) as packed:
        names = {name.removeprefix("./") for name in packed.getnames()}
    assert not {"postmaster.pid", "postmaster.opts", "mysqld.pid"} & names
    if kind == "postgres":  # template1, template0 and postgres: what initdb makes, and no database of a dump
        assert {n.split("/")[1] for n in names if n.startswith("base/") and n.count("/") >= 1} == {"1", "4", "5"}
    else:
        assert db.name not in {n.split("/")[0] for n in names}
    assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []
