"""Verifying database dumps on real restic and real throwaway instances: intact ones pass, altered ones are named."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agents.config.model import AgentConfig
from agents.jobs.backup import run_policy_backup
from agents.restic.runner import Restic
from policies.levels import Level
from tests.support.configs import Workspace
from tests.support.databases import (
    ThrowawayDatabase,
    admin_connection,
    mysql_admin,
    throwaway_database,
    throwaway_mysql_database,
)


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
    [*_, record] = run_policy_backup(config, "nightly", Level.FULL)
    assert record.outcome == "success", record.findings
    return path


def _verify(path: str, *extra: str) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "verify", "--config", path, "--repository", "local", "--target", "app",
         "--json", *extra], capture_output=True, text=True, check=False)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _codes(document: dict[str, object]) -> set[tuple[str, str | None]]:
    return {(f["code"], f.get("subject")) for f in document["findings"]}  # type: ignore[attr-defined, union-attr]


def _instances_left(scratch_dir: str) -> list[str]:
    """Command lines of processes still running out of ``scratch_dir`` (a throwaway server left behind)."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as handle:
            line = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if scratch_dir in line:
                left.append(line)
    return left


def test_postgres_dump_and_globals_verify_in_a_throwaway_instance(workspace: Workspace, scratch_dir: str) -> None:
    with throwaway_database(rows=2000) as db:
        path = _config(workspace, db, "postgres", {"directory": scratch_dir})
        code, documents = _verify(path, "--latest", "--read-data-parts", "1")
        assert code == 0, [d["findings"] for d in documents]
        by_database = {d["snapshot"]["database"]: d for d in documents}  # type: ignore[index]
        assert set(by_database) == {"@globals", db.name}
        dump = by_database[db.name]
        assert dump["verdict"] == "passed" and dump["findings"] == []
        assert dump["compared"] == {"files": 0, "bytes": dump["dump"]["bytes"],  # type: ignore[index]
                                    "tables": 2, "rows": 2000 + 4000}
        assert dump["scratch"]["where"] == "throwaway instance"  # type: ignore[index]
        assert {"scratch_start", "restore", "compare"} <= set(dump["timings"]["phases"])  # type: ignore[index]
        assert dump["check"]["passed"] is True and dump["check"]["seconds"] > 0  # type: ignore[index]
        assert dump["check"]["coverage"]["fraction"] == 1.0  # type: ignore[index]
        globals_ = by_database["@globals"]
        assert globals_["verdict"] == "passed"
        assert globals_["dump"]["digest"] == globals_["dump"]["expected"]  # type: ignore[index]
        assert os.listdir(scratch_dir) == [] and _instances_left(scratch_dir) == []


def _rewrite_dump(config: AgentConfig, database: str, altered: bytes) -> None:
    """Write ``altered`` as a new dump snapshot carrying the original dump's tags (an attacker or a bug)."""
    restic = Restic(config.restic_binary, config.repositories["local"])
    [original] = [s for s in restic.snapshots() if s.tag_value("drill.part") == "dump"
                  and s.tag_value("drill.database") == database]
    env = {**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
           "RESTIC_PASSWORD_FILE": config.repositories["local"].password_file or ""}
    tags = [arg for tag in original.tags for arg in ("--tag", tag)]
    subprocess.run([config.restic_binary, "backup", "-q", "--stdin", "--stdin-filename", f"{database}.dump",
                    "--host", original.hostname, *tags], input=altered, env=env, check=True)


def _original_dump(config: AgentConfig, database: str) -> bytes:
    restic = Restic(config.restic_binary, config.repositories["local"])
    [original] = [s for s in restic.snapshots() if s.tag_value("drill.part") == "dump"
                  and s.tag_value("drill.database") == database]
    return restic.dump(original.id, f"/{database}.dump")


@contextlib.contextmanager
def _pg_copy(dump: bytes) -> Iterator[str]:
    name = f"drill_tamper_{secrets.token_hex(4)}"
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "-h", "127.0.0.1", "-U", "postgres",
                        "-d", name], input=dump, check=True, capture_output=True)
        yield name
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize(("statement", "expected"), [
    ("DELETE FROM accounts WHERE id = 7", ("row_count_mismatch", "public.accounts")),
    ("DROP TABLE events", ("table_missing", "public.events")),
])
def test_an_altered_postgres_dump_is_caught(
    workspace: Workspace, scratch_dir: str, statement: str, expected: tuple[str, str]
) -> None:
    with throwaway_database(rows=500) as db:
        path = _config(workspace, db, "postgres", {"directory": scratch_dir})
        config = workspace.load(path)
        with _pg_copy(_original_dump(config, db.name)) as copy:
            with admin_connection(copy) as connection:
                connection.execute(statement)
            altered = subprocess.run(["pg_dump", "--format=custom", "-h", "127.0.0.1", "-U", "postgres", copy],
                                     capture_output=True, check=True).stdout
        _rewrite_dump(config, db.name, altered)
        code, [document] = _verify(path, "--latest", "--database", db.name)
        assert code == 1
        assert document["verdict"] == "failed"
        codes = _codes(document)
        assert expected in codes
        assert {"dump_snapshot_mismatch", "dump_digest_mismatch"} <= {c for c, _ in codes}
        assert os.listdir(scratch_dir) == [] and _instances_left(scratch_dir) == []


def test_a_row_deleted_from_a_mariadb_dump_is_caught(workspace: Workspace, scratch_dir: str) -> None:
    with throwaway_mysql_database(rows=500) as db:
        path = _config(workspace, db, "mysql", {"directory": scratch_dir})
        config = workspace.load(path)
        code, [intact] = _verify(path, "--latest")
        assert code == 0, intact["findings"]
        assert intact["compared"]["tables"] == 3  # type: ignore[index]
        copy = f"drill_tamper_{secrets.token_hex(4)}"
        admin = mysql_admin()
        with admin.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"CREATE DATABASE {copy}")
        try:
            subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", copy],
                           input=_original_dump(config, db.name), check=True, capture_output=True)
            with admin.cursor() as cursor:  # type: ignore[attr-defined]
                cursor.execute(f"DELETE FROM {copy}.events WHERE id = 11")
            altered = subprocess.run(["mariadb-dump", "-h", "127.0.0.1", "-u", "root", "--single-transaction",
                                      "--hex-blob", copy], capture_output=True, check=True).stdout
        finally:
            with admin.cursor() as cursor:  # type: ignore[attr-defined]
                cursor.execute(f"DROP DATABASE IF EXISTS {copy}")
            admin.close()  # type: ignore[attr-defined]
        _rewrite_dump(config, db.name, altered)
        code, [document] = _verify(path, "--latest")
        assert code == 1
        assert (("row_count_mismatch", f"{db.name}.events") in _codes(document))
        assert os.listdir(scratch_dir) == [] and _instances_left(scratch_dir) == []


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


def test_a_full_scratch_disk_could_not_verify_and_is_cleaned(workspace: Workspace, scratch_dir: str) -> None:
    with throwaway_database(rows=300_000) as db:
        path = _config(workspace, db, "postgres", {"directory": scratch_dir})
        with _small_tmpfs(scratch_dir, "64m") as small:
            code, [document] = _verify(path, "--latest", "--database", db.name, "--scratch", small)
            assert code == 2
            assert document["verdict"] == "error" and document["outcome"] == "failed"
            [finding] = [f for f in document["findings"] if f["code"] == "could_not_verify"]  # type: ignore[attr-defined]
            assert "No space left on device" in finding["message"] or "could not extend" in finding["message"]
            assert os.listdir(small) == [] and _instances_left(scratch_dir) == []


def test_a_scratch_server_gets_a_new_database_that_is_dropped(workspace: Workspace, scratch_dir: str) -> None:
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


def test_a_mariadb_scratch_server_gets_a_new_database_that_is_dropped(workspace: Workspace, scratch_dir: str) -> None:
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
