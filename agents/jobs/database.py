"""The backup job of a database target: one dump snapshot and one manifest snapshot per database.

For each database: the engine opens the view the manifest is computed in
(PostgreSQL: an exported snapshot; MySQL/MariaDB: a transaction started with the
dump's while writes are held) → the dump tool's output is streamed into
``restic backup --stdin`` (digest computed as it streams) → meanwhile every table
is checksummed in that view → the manifest (naming the dump snapshot's id) is
stored as a second snapshot of the same job, by a restic started with the job and
waiting for it → replication and retention as for files. A dump is always
complete; the level is recorded, it changes nothing in the dump. The job is the
same for every engine (``agents/engines``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from agents import process
from agents.config.model import AgentConfig
from agents.contract.records import BackupTarget, DumpManifestInfo, LevelInfo, ResticInfo, SignedRecord, SnapshotRef
from agents.engines import engine_for
from agents.engines.base import Capture, DatabaseEngine
from agents.inthread import InThread
from agents.jobs import catalog
from agents.jobs.dumpstream import DumpFailed, PendingStdinBackup, StreamedDump, stream_dump
from agents.jobs.replication import apply_retention, replicate
from agents.journal import Journal
from agents.records import BackupDraft, RecordDraft, decide_outcome, job_record, new_backup_draft
from agents.repositories import open_outbox, open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from policies.config import PolicyConfig
from policies.levels import Level
from targets import hashing
from targets.registry import TargetConfig
from targets.tables import DatabaseUnavailable, TableManifest

log = logging.getLogger(__name__)


def backup_database_target(
    config: AgentConfig, policy: PolicyConfig, target: TargetConfig, level: Level, state: StateDir,
    *, request: str | None = None,
) -> list[SignedRecord]:
    """Back up each database of ``target``; one signed record per database, in the outbox."""
    outbox = open_outbox(config)
    engine = engine_for(target.kind)
    try:
        databases = engine.list_databases(target)
    except (OSError, DatabaseUnavailable) as error:
        draft = _new_draft(config, policy, target, level, None, request)
        with job_record(outbox, draft):
            draft.add("database_unavailable", "error", f"cannot list the databases of {target.name}: {error}")
            draft.outcome = "failed"
        return [draft.written()]
    records = []
    for database in databases:
        if process.CANCELLATION.is_cancelled:
            break
        draft = _new_draft(config, policy, target, level, database, request)
        try:
            with Journal(state).running(draft.job_id, policy.repository, []), job_record(outbox, draft):
                complete = _backup_database(config, policy, target, engine, database, state, draft)
                draft.outcome = decide_outcome(draft, complete=complete)
        except Exception:
            log.exception("backup of %s/%s/%s failed unexpectedly", policy.name, target.name, database)
        records.append(draft.written())
    return records


def _new_draft(
    config: AgentConfig, policy: PolicyConfig, target: TargetConfig, level: Level, database: str | None,
    request: str | None,
) -> RecordDraft[BackupDraft]:
    draft = new_backup_draft(config, policy, BackupTarget(name=target.name, kind=target.kind, database=database),
                             level, request)
    # A dump is always complete: the level is recorded, it changes nothing in the dump.
    draft.details.level = LevelInfo(requested=level, effective=level, reason="a database dump is always complete")
    return draft


def _dump_tags(record: RecordDraft[BackupDraft], policy: PolicyConfig, target: TargetConfig,
               database: str) -> list[str]:
    return [
        catalog.tag("job", record.job_id), catalog.tag("policy", policy.name), catalog.tag("target", target.name),
        catalog.tag("level", record.details.level.requested.value), catalog.tag("base", "none"),
        catalog.tag("database", database), catalog.tag("part", "dump"),
    ]


def _backup_database(
    config: AgentConfig, policy: PolicyConfig, target: TargetConfig, engine: DatabaseEngine, database: str,
    state: StateDir, record: RecordDraft[BackupDraft],
) -> bool:
    restic = open_repository(config, policy.repository)
    record.details.restic = ResticInfo(version=str(restic.version))
    # The manifest's restic starts now and waits: its key derivation overlaps the dump instead of following it.
    with PendingStdinBackup(restic, filename=f"{database}.manifest.json", host=config.host,
                            tags=_manifest_tags(record, policy, target, database)) as pending:
        return _dump_and_store(config, policy, target, engine, database, state, record, restic, pending)


def _dump_and_store(
    config: AgentConfig, policy: PolicyConfig, target: TargetConfig, engine: DatabaseEngine, database: str,
    state: StateDir, record: RecordDraft[BackupDraft], restic: Restic, pending: PendingStdinBackup,
) -> bool:
    try:
        with engine.capture(target, database, state) as capture:
            problem = capture.preflight()
            if problem is not None:
                record.add("dump_tool_too_old", "error", problem, database)
                return False
            tables, dumping = _dump_and_checksum(config, capture, restic, engine.dump_filename(database),
                                                 _dump_tags(record, policy, target, database), record, pending)
            label = capture.label
    except DatabaseUnavailable as error:
        record.add("database_unavailable", "error", f"database {database!r}: {error}", database)
        return False
    except OSError as error:  # the password file
        record.add("database_unavailable", "error", f"database {database!r}: {error}", database)
        return False
    failure = dumping.failure()
    if failure is not None:
        return _record_dump_failure(failure, database, record)
    for digested in (t for t in tables.tables if t.columns_digested):
        record.add("columns_digested", "info",
                   f"{database}.{digested.name} has rows longer than the server's max_allowed_packet: it was summed "
                   "with each column digested first (the manifest says so)", f"{database}.{digested.name}")
    for table in tables.non_transactional:
        record.add("non_transactional_table", "warning",
                   f"{database}.{table} is not transactional: its checksum is exact only if nothing wrote to it "
                   "during the backup", f"{database}.{table}")
    manifest = {
        "schema": engine.manifest_schema,
        "host": config.host,
        "policy": policy.name,
        "target": target.name,
        "database": database,
        "job_id": record.job_id,
        "level": record.details.level.requested.value,
        "consistency": label,
        "checksum": tables.method,
        "schema_digest": tables.schema_digest,
        "tables": tables.table_documents(),
        "non_transactional": list(tables.non_transactional),
        "dump": {"filename": engine.dump_filename(database)},
    }
    if not _store_manifest(config, restic, pending, dumping.result(), manifest, record):
        return False
    _replicate_and_retain(config, policy, restic, target.name, record)
    return True


def _dump_and_checksum(
    config: AgentConfig, capture: Capture, restic: Restic, filename: str, tags: list[str],
    record: RecordDraft[BackupDraft], pending: PendingStdinBackup,
) -> tuple[TableManifest, InThread[StreamedDump]]:
    """Stream the dump into restic in a thread while the tables are checksummed in the same view; the checksums
    and the dump's thread, ended (:meth:`InThread.result` gives the dump or raises why it failed)."""
    argv, env = capture.dump_command()
    with record.phase("dump"):
        dumping = InThread(lambda: stream_dump(argv, env, restic, filename=filename, host=config.host, tags=tags,
                                               waiting=[pending]), "dump")
        try:
            capture.after_dump_started(lambda: dumping.running)
            with record.phase("checksum"):
                return capture.checksums(), dumping
        finally:
            dumping.wait()


def _record_dump_failure(failure: BaseException, database: str, record: RecordDraft[BackupDraft]) -> bool:
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


def _manifest_tags(record: RecordDraft[BackupDraft], policy: PolicyConfig, target: TargetConfig,
                   database: str) -> list[str]:
    return catalog.make_manifest_tags(record.job_id, policy.name, target.name, record.details.level.requested,
                                      database)


def _store_manifest(
    config: AgentConfig, restic: Restic, pending: PendingStdinBackup, dumped: StreamedDump, manifest: dict[str, Any],
    record: RecordDraft[BackupDraft],
) -> bool:
    """Store the manifest beside the dump; on failure forget the dump (it must not look complete)."""
    dump_id, dump_tree, dump_time = restic.identify(dumped.run)
    manifest["snapshot_id"] = dump_id
    manifest["dump"].update(digest=dumped.digest, bytes=dumped.size)
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest = hashing.digest_bytes("sha256", data)
    try:
        manifest_id = restic.identify(pending.store(data))[0]
    except ResticError as error:
        record.add("manifest_store_failed", "error", error.describe())
        restic.forget_quietly([dump_id])
        return False
    StateDir(config.state_dir).save_manifest(dump_id, data)
    tables = manifest["tables"]
    record.details.snapshot = SnapshotRef(id=dump_id, time=dump_time, tree=dump_tree)
    record.details.restic = ResticInfo(version=str(restic.version), summary=dumped.run.summary.as_record())
    record.details.manifest = DumpManifestInfo(
        digest=digest, snapshot_id=manifest_id, schema_digest=manifest["schema_digest"], dump_digest=dumped.digest,
        dump_bytes=dumped.size, tables=len(tables), rows=sum(t["rows"] for t in tables),
        non_transactional=len(manifest["non_transactional"]), size=len(data))
    return True


def _replicate_and_retain(
    config: AgentConfig, policy: PolicyConfig, restic: Restic, target: str, record: RecordDraft[BackupDraft]
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
