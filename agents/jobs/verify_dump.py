"""Verifying a database dump: load it into a scratch database and recompute every table's checksum there.

Given a dump and its manifest snapshot: read the manifest and check its digest
→ check that it names this dump → stream the dump out of restic into the loader
of a throwaway instance (or a scratch server's new database), hashing it → compare
the stream's digest with the manifest's → recompute the schema digest and each
table's row count and checksum exactly as at backup time → a finding for every
difference. The global objects (``@globals``) are checked by digest only: loading
roles into a scratch instance proves nothing more.

Which side is at fault decides the verdict: a stored dump whose digest differs
is a failure of the backup; a loader that fails on an intact dump (a scratch
disk full, a scratch server too old) means the verification could not run.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import psycopg
import pymysql

from agents import process
from agents.config.model import AgentConfig
from agents.jobs.catalog import StoredBackup
from agents.jobs.db_sources import GLOBALS
from agents.jobs.restorestream import StreamedRestore, stream_restore
from agents.jobs.verify_common import CouldNotVerify, check_manifest_digest
from agents.records import ResultRecord
from agents.restic.runner import Restic, ResticError
from agents.scratch.account import ScratchUnusable
from agents.scratch.mysql import MysqlRestoreTarget, mysql_restore_target
from agents.scratch.postgres import PostgresRestoreTarget, postgres_restore_target
from agents.state import StateDir
from targets.tables import TableChecksum, compare_tables

RestoreTarget = PostgresRestoreTarget | MysqlRestoreTarget


def _load_manifest(
    restic: Restic, backup: StoredBackup, state: StateDir, record: ResultRecord
) -> dict[str, Any] | None:
    assert backup.manifest_snapshot_id is not None
    try:
        data = restic.dump(backup.manifest_snapshot_id, backup.manifest_path)
    except ResticError as error:
        raise CouldNotVerify(f"the manifest could not be read: {error.describe()}") from error
    if not check_manifest_digest(data, backup, state, record):
        return None
    try:
        manifest = json.loads(data)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), list):
            raise ValueError("not a manifest object")
    except ValueError as error:
        record.add("manifest_unreadable", "error", f"the manifest is not valid: {error}")
        return None
    return manifest


def _engine(manifest: dict[str, Any]) -> str:
    schema = str(manifest.get("schema", ""))
    return "mysql" if schema.startswith("drill.manifest.mysql/") else "postgres"


def verify_dump_backup(
    config: AgentConfig, restic: Restic, backup: StoredBackup, scratch: str, state: StateDir, record: ResultRecord
) -> None:
    """Verify one dump; add a finding for every difference. Raises :class:`CouldNotVerify`."""
    database = backup.database or ""
    record.details["compared"] = {"files": 0, "bytes": 0, "tables": 0, "rows": 0}
    record.details["database"] = database
    manifest = _load_manifest(restic, backup, state, record)
    if manifest is None:
        return
    if not backup.manifest_names_this_dump:
        record.add("dump_snapshot_mismatch", "error",
                   f"the manifest was made for dump snapshot {backup.manifest_for}, but this job's dump is "
                   f"{backup.snapshot_id}: the dump was written again after the backup", backup.snapshot_id)
    dump = manifest.get("dump")
    dump = dump if isinstance(dump, dict) else {}
    name = str(dump.get("filename") or f"{database}.dump")
    if "/" in name or name in (".", "..") or "\0" in name:
        record.add("manifest_unreadable", "error", f"the manifest names the dump {name!r}, not a file name")
        return
    filename = "/" + name
    expected_digest = str(dump.get("digest", ""))
    if database == GLOBALS:
        with record.phase("restore"):
            streamed = _stream(restic, backup, filename, None)
        _check_stream(streamed, expected_digest, record)
        record.details["scratch"].update(where="none (global objects: digest only)")
        return
    engine = _engine(manifest)
    try:
        with contextlib.ExitStack() as stack:
            with record.phase("scratch_start"):
                target = stack.enter_context(_restore_target(config, engine, scratch, database, state))
            record.details["scratch"].update(where=target.where, engine=engine)
            with record.phase("restore"):
                streamed = _stream(restic, backup, filename, target)
            intact = _check_stream(streamed, expected_digest, record)
            if streamed.loader_code != 0:
                said = explain_loader_failure(streamed.loader_stderr)
                server_said = target.server_problem()
                said += f"; the scratch server logged: {server_said}" if server_said else ""
                if intact:
                    raise CouldNotVerify(f"the dump is intact, but the scratch database could not load it: {said}")
                record.add("restore_failed", "error", f"the altered dump could not be loaded: {said}")
                return
            with record.phase("compare"):
                schema_digest, tables, _ = target.checksums()
    except ScratchUnusable as error:
        raise CouldNotVerify(f"no scratch database: {error}") from error
    except (psycopg.Error, pymysql.MySQLError) as error:
        raise CouldNotVerify(f"the restored database could not be read: {str(error).strip()}") from error
    _compare(manifest, schema_digest, tables, record)


def explain_loader_failure(stderr: tuple[str, ...]) -> str:
    """The loader's own words: its first error line (the cause; later ones are consequences), else its last line."""
    lines = [line.strip() for line in stderr if line.strip()]
    errors = [line for line in lines if any(word in line for word in ("error", "ERROR", "FATAL", "PANIC"))]
    first = errors[0] if errors else (lines[-1] if lines else "no message")
    return first if len(first) <= 500 else first[:500] + "…"


def _restore_target(
    config: AgentConfig, engine: str, scratch: str, database: str, state: StateDir
) -> contextlib.AbstractContextManager[RestoreTarget]:
    if engine == "postgres":
        return postgres_restore_target(config.scratch.postgres, scratch, database, state)
    return mysql_restore_target(config.scratch.mysql, scratch, database, state)


def _compare(manifest: dict[str, Any], schema_digest: str, tables: list[TableChecksum], record: ResultRecord) -> None:
    expected_tables = [t for t in manifest["tables"] if isinstance(t, dict)]
    record.details["compared"].update(tables=len(tables), rows=sum(t.rows for t in tables))
    if schema_digest != manifest.get("schema_digest"):
        record.add("schema_digest_mismatch", "error",
                   f"the restored schema has digest {schema_digest}, the manifest says {manifest.get('schema_digest')}")
    for difference in compare_tables(expected_tables, tables):
        record.add(difference.code, "error", difference.detail, difference.table)
    non_transactional = manifest.get("non_transactional") or []
    for table in non_transactional if isinstance(non_transactional, list) else []:
        record.add("non_transactional_table", "info",
                   f"{table} is not transactional: its manifest checksum was exact only if nothing wrote to it "
                   "during the backup", str(table))


def _stream(restic: Restic, backup: StoredBackup, filename: str, target: RestoreTarget | None) -> StreamedRestore:
    try:
        return stream_restore(restic, backup.snapshot_id, filename, target.load_command() if target else None)
    except ResticError as error:
        raise CouldNotVerify(f"restic could not deliver the dump: {error.describe()}") from error
    except FileNotFoundError as error:
        raise CouldNotVerify(f"{error.filename} is not installed") from error
    except process.ProcessStopped as error:
        raise CouldNotVerify(f"loading the dump stopped: {error.detail}") from error


def _check_stream(streamed: StreamedRestore, expected: str, record: ResultRecord) -> bool:
    record.details["dump"] = {"digest": streamed.digest, "expected": expected, "bytes": streamed.size}
    record.details["compared"]["bytes"] = streamed.size
    if streamed.digest != expected:
        record.add("dump_digest_mismatch", "error",
                   f"the dump in the repository has digest {streamed.digest}, the manifest says {expected}")
        return False
    return True
