"""The backup job of a database target: one dump snapshot and one manifest snapshot per database.

For each database: open the snapshot the manifest is computed in (PostgreSQL:
an exported snapshot; MySQL/MariaDB: a transaction started with the dump's while
writes are held) → stream the dump tool's output into ``restic backup --stdin``
(digest computed as it streams) → meanwhile checksum every table in that
snapshot → store the manifest as a second snapshot tagged with the dump
snapshot's id and the manifest's digest → replicate and apply retention as for
files. A dump is always complete; the level is recorded, it changes nothing in
the dump.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from typing import Any

from agents import process
from agents.config.model import AgentConfig
from agents.jobs import catalog
from agents.jobs.db_sources import DatabaseSource, make_source
from agents.jobs.dumpstream import DumpFailed, StreamedDump, stream_dump
from agents.jobs.replication import apply_retention, replicate
from agents.records import Outbox, ResultRecord, decide_outcome, iso, job_record
from agents.repositories import open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from policies.config import PolicyConfig
from policies.levels import Level
from targets import hashing
from targets.mysql.config import MysqlTargetConfig
from targets.postgres.config import PostgresTargetConfig
from targets.tables import DatabaseUnavailable

log = logging.getLogger(__name__)

DatabaseTarget = PostgresTargetConfig | MysqlTargetConfig


def backup_database_target(
    config: AgentConfig, policy: PolicyConfig, target: DatabaseTarget, level: Level, state: StateDir
) -> list[ResultRecord]:
    """Back up each database of ``target``; one record per database, in the outbox."""
    outbox = Outbox.of(config)
    try:
        source = make_source(target)
        databases = source.list_databases()
    except (OSError, DatabaseUnavailable) as error:
        record = _new_record(config, policy, target, level, database=None)
        with job_record(outbox, record):
            record.add("database_unavailable", "error", f"cannot list the databases of {target.name}: {error}")
            record.outcome = "failed"
        return [record]
    records = []
    for database in databases:
        if process.CANCELLATION.is_cancelled:
            break
        record = _new_record(config, policy, target, level, database)
        try:
            with job_record(outbox, record):
                complete = _backup_database(config, policy, target, source, database, state, record)
                record.outcome = decide_outcome(record, complete=complete)
        except Exception:
            log.exception("backup of %s/%s/%s failed unexpectedly", policy.name, target.name, database)
        records.append(record)
    return records


def _new_record(
    config: AgentConfig, policy: PolicyConfig, target: DatabaseTarget, level: Level, database: str | None
) -> ResultRecord:
    repository = config.repositories[policy.repository]
    record = ResultRecord("backup", host=config.host)
    record.details = {
        "policy": policy.name,
        "target": {"name": target.name, "kind": target.kind, "database": database},
        "repository": {"name": repository.name, "site": config.sites[repository.name]},
        # A dump is always complete: the level is recorded, it changes nothing in the dump.
        "level": {"requested": level.value, "effective": level.value, "reason": "a database dump is always complete"},
        "base_snapshot_id": None,
        "snapshot": None,
        "manifest": None,
        "restic": None,
        "replication": [],
        "retention": {},
    }
    return record


def _dump_tags(record: ResultRecord, policy: PolicyConfig, target: DatabaseTarget, database: str) -> list[str]:
    return [
        catalog.tag("job", record.job_id), catalog.tag("policy", policy.name), catalog.tag("target", target.name),
        catalog.tag("level", record.details["level"]["effective"]), catalog.tag("base", "none"),
        catalog.tag("database", database), catalog.tag("part", "dump"),
    ]


def _backup_database(
    config: AgentConfig, policy: PolicyConfig, target: DatabaseTarget, source: DatabaseSource, database: str,
    state: StateDir, record: ResultRecord,
) -> bool:
    restic = open_repository(config, policy.repository)
    record.details["restic"] = {"version": str(restic.version), "summary": None}
    streamed: dict[str, Any] = {}
    try:
        with source.secrets_file(state) as secrets, source.session(database) as session:
            problem = source.preflight(session)
            if problem is not None:
                record.add("dump_tool_too_old", "error", problem, database)
                return False
            argv, env = source.dump_command(session, database, secrets)
            tags = _dump_tags(record, policy, target, database)

            def dump() -> None:
                try:
                    streamed["dump"] = stream_dump(
                        argv, env, restic, filename=source.dump_filename(database), host=config.host, tags=tags
                    )
                except BaseException as error:
                    streamed["error"] = error

            worker = threading.Thread(target=dump, name="dump", daemon=True)
            with record.phase("dump"):
                worker.start()
                try:
                    session.after_dump_started(worker.is_alive)
                    with record.phase("checksum"):
                        schema_digest, tables, non_transactional = session.checksums()
                finally:
                    worker.join()
            label = session.label
    except DatabaseUnavailable as error:
        record.add("database_unavailable", "error", f"database {database!r}: {error}", database)
        return False
    if "error" in streamed:
        return _record_dump_failure(streamed["error"], database, record)
    for table in non_transactional:
        record.add("non_transactional_table", "warning",
                   f"{database}.{table} is not transactional: its checksum is exact only if nothing wrote to it "
                   "during the backup", f"{database}.{table}")
    manifest = {
        "schema": f"drill.manifest.{source.engine}/v1",
        "host": config.host,
        "policy": policy.name,
        "target": target.name,
        "database": database,
        "job_id": record.job_id,
        "level": record.details["level"]["effective"],
        "consistency": label,
        "checksum": source.checksum_method,
        "schema_digest": schema_digest,
        "tables": tables,
        "non_transactional": non_transactional,
    }
    manifest["dump"] = {"filename": source.dump_filename(database)}
    if not _store_manifest(config, policy, target, database, restic, streamed["dump"], manifest, record):
        return False
    _replicate_and_retain(config, policy, restic, target.name, record)
    return True


def _record_dump_failure(failure: BaseException, database: str, record: ResultRecord) -> bool:
    if isinstance(failure, DumpFailed):
        said = next((line.strip() for line in reversed(failure.stderr_tail) if line.strip()), "")
        record.add("dump_failed", "error", f"{failure} ({said})" if said else str(failure), database)
        if failure.snapshot_left:
            record.add("truncated_snapshot_left", "error",
                       f"snapshot {failure.snapshot_left} holds a truncated dump and could not be forgotten")
        return False
    if isinstance(failure, ResticError):
        record.add(failure.finding_code, "error", failure.describe())
        return False
    if isinstance(failure, FileNotFoundError):
        record.add("dump_tool_missing", "error", f"{failure.filename} is not installed", database)
        return False
    raise failure


def _store_manifest(
    config: AgentConfig, policy: PolicyConfig, target: DatabaseTarget, database: str, restic: Restic,
    dumped: StreamedDump, manifest: dict[str, Any], record: ResultRecord,
) -> bool:
    """Store the manifest beside the dump; on failure forget the dump (it must not look complete)."""
    dump_id, dump_tree, dump_time = restic.identify(dumped.run)
    manifest["snapshot_id"] = dump_id
    manifest["dump"].update(digest=dumped.digest, bytes=dumped.size)
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest = hashing.digest_bytes("sha256", data)
    tags = [catalog.tag("job", record.job_id), catalog.tag("policy", policy.name), catalog.tag("target", target.name),
            catalog.tag("level", manifest["level"]), catalog.tag("database", database),
            catalog.tag("part", "manifest"), catalog.tag("for", dump_id), catalog.tag("digest", digest)]
    with tempfile.TemporaryFile() as stream:
        stream.write(data)
        stream.seek(0)
        try:
            stored = restic.backup_stdin(stream, filename=f"{database}.manifest.json", host=config.host, tags=tags)
            manifest_id = restic.identify(stored)[0]
        except ResticError as error:
            record.add("manifest_store_failed", "error", error.describe())
            restic.forget_quietly([dump_id])
            return False
    StateDir(config.state_dir).save_manifest(dump_id, data)
    tables = manifest["tables"]
    record.details["snapshot"] = {"id": dump_id, "time": iso(dump_time), "tree": dump_tree}
    record.details["restic"]["summary"] = dumped.run.summary.as_record()
    record.details["manifest"] = {
        "digest": digest,
        "snapshot_id": manifest_id,
        "schema_digest": manifest["schema_digest"],
        "dump_digest": dumped.digest,
        "dump_bytes": dumped.size,
        "tables": len(tables),
        "rows": sum(t["rows"] for t in tables),
        "non_transactional": len(manifest["non_transactional"]),
    }
    return True


def _replicate_and_retain(
    config: AgentConfig, policy: PolicyConfig, restic: Restic, target: str, record: ResultRecord
) -> None:
    """Copy to the other sites and apply retention, as for files (dump and manifest snapshots together)."""
    if not (policy.replicate_to or policy.retention):
        return
    try:
        with record.phase("list"):
            backups = catalog.collect_backups(
                restic.snapshots(host=config.host), host=config.host, policy=policy.name, target=target
            )
    except ResticError as error:
        record.add(error.finding_code, "error", error.describe())
        return
    listings = {policy.repository: backups}
    listings.update(replicate(config, policy, restic, record))
    apply_retention(config, policy, restic, listings, record)
