"""The backup job of a ``postgres`` target: one dump snapshot and one manifest snapshot per database.

For each database: open a transaction and export its snapshot → start
``pg_dump --snapshot`` streamed into ``restic backup --stdin`` (digest computed
as it streams) → meanwhile, in the same snapshot, checksum every table → store
the manifest as a second snapshot tagged with the dump snapshot's id and the
manifest's digest. A dump is always complete; the level is recorded (and
upgraded as for files), it does not change what is dumped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from agents import process
from agents.config.model import AgentConfig
from agents.jobs import catalog
from agents.jobs.dumpstream import DumpFailed, StreamedDump, stream_dump
from agents.jobs.replication import apply_retention, replicate
from agents.records import Outbox, ResultRecord, decide_outcome, iso, job_record
from agents.repositories import open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from policies.config import PolicyConfig
from policies.levels import Level
from targets import hashing
from targets.postgres import commands as pg_commands
from targets.postgres.config import PostgresTargetConfig
from targets.postgres.snapshot import DatabaseUnavailable, SnapshotSession, TableChecksum, connection_info

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = "drill.manifest.postgres/v1"


def _read_password(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read().rstrip("\n")


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def pgpass_file(state: StateDir, target: PostgresTargetConfig, password: str | None) -> Iterator[str | None]:
    """A 0600 PGPASSFILE for pg_dump, removed afterwards; None when no password is configured."""
    if password is None:
        yield None
        return
    fd, path = tempfile.mkstemp(dir=state.sub("tmp"), prefix="pgpass-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fields = [target.host, str(target.port), "*", target.user or "*", password]
            handle.write(":".join(_pgpass_escape(f) if i != 2 else f for i, f in enumerate(fields)) + "\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def list_databases(target: PostgresTargetConfig, password: str | None) -> list[str]:
    """The target's databases: as configured, or every database that accepts connections."""
    if target.databases is not None:
        return list(target.databases)
    info = connection_info(target.host, target.port, target.user, "postgres", password)
    try:
        with psycopg.connect(**info) as connection:  # type: ignore[arg-type]
            rows = connection.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
            ).fetchall()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(str(exc).strip().splitlines()[0]) from exc
    return [str(r[0]) for r in rows]


def pg_dump_major(binary: str) -> int | None:
    result = process.run_process(
        pg_commands.make_pg_dump_version_command(binary), env=process.inherited_environment({}), timeout=30
    )
    return pg_commands.parse_pg_dump_major(result.stdout)


def backup_postgres_target(
    config: AgentConfig, policy: PolicyConfig, target: PostgresTargetConfig, level: Level, state: StateDir
) -> list[ResultRecord]:
    """Back up each database of ``target``; one record per database, in the outbox."""
    outbox = Outbox(config.state_dir)
    try:
        password = _read_password(target.password_file)
        databases = list_databases(target, password)
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
                complete = _backup_database(config, policy, target, database, password, state, record)
                record.outcome = decide_outcome(record, complete=complete)
        except Exception:
            log.exception("backup of %s/%s/%s failed unexpectedly", policy.name, target.name, database)
        records.append(record)
    return records


def _new_record(config: AgentConfig, policy: PolicyConfig, target: PostgresTargetConfig, level: Level,
                database: str | None) -> ResultRecord:
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


def _backup_database(
    config: AgentConfig, policy: PolicyConfig, target: PostgresTargetConfig, database: str, password: str | None,
    state: StateDir, record: ResultRecord,
) -> bool:
    level = Level(record.details["level"]["effective"])
    try:
        restic = open_repository(config, policy.repository)
    except ResticError as error:
        record.add("restic_failed", "error", error.describe())
        return False
    record.details["restic"] = {"version": str(restic.version), "summary": None}
    dump_major = pg_dump_major(target.pg_dump)
    info = connection_info(target.host, target.port, target.user, database, password)
    try:
        with pgpass_file(state, target, password) as pgpass, SnapshotSession(info) as session:
            if dump_major is None or dump_major < session.server_major:
                record.add(
                    "pg_dump_too_old", "error",
                    f"{target.pg_dump} is version {dump_major}, older than the server's {session.server_major}; "
                    "install the pg_dump of the server's major version (set 'pg_dump' in the target)",
                )
                return False
            env = process.inherited_environment({"PGPASSFILE": pgpass} if pgpass else {})
            env.pop("PGPASSWORD", None)
            argv = pg_commands.make_pg_dump_command(
                target.pg_dump, host=target.host, port=target.port, user=target.user, database=database,
                snapshot=session.snapshot_id,
            )
            tags = [
                catalog.tag("job", record.job_id), catalog.tag("policy", policy.name),
                catalog.tag("target", target.name), catalog.tag("level", level.value),
                catalog.tag("base", "none"), catalog.tag("database", database), catalog.tag("part", "dump"),
            ]
            streamed: dict[str, Any] = {}

            def dump() -> None:
                try:
                    streamed["dump"] = stream_dump(
                        argv, env, restic, filename=f"{database}.dump", host=config.host, tags=tags
                    )
                except BaseException as error:
                    streamed["error"] = error

            worker = threading.Thread(target=dump, name="pg-dump", daemon=True)
            with record.phase("dump"):
                worker.start()
                with record.phase("checksum"):
                    schema_digest, tables = session.checksums()
                worker.join()
    except DatabaseUnavailable as error:
        record.add("database_unavailable", "error", f"database {database!r}: {error}", database)
        return False
    if "error" in streamed:
        failure = streamed["error"]
        if isinstance(failure, DumpFailed):
            said = next((line for line in reversed(failure.stderr_tail) if line.strip()), "")
            record.add("dump_failed", "error", f"{failure} ({said.strip()})" if said else str(failure), database)
            if failure.snapshot_left:
                record.add("truncated_snapshot_left", "error",
                           f"snapshot {failure.snapshot_left} holds a truncated dump and could not be forgotten")
            return False
        if isinstance(failure, ResticError):
            record.add("restic_failed", "error", failure.describe())
            return False
        raise failure
    if not _store_manifest(config, policy, target, database, level, restic, streamed["dump"], schema_digest,
                           tables, session_snapshot=session.snapshot_id, record=record):
        return False
    _replicate_and_retain(config, policy, restic, target.name, record)
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
        record.add("restic_failed", "error", error.describe())
        return
    listings = {policy.repository: backups}
    listings.update(replicate(config, policy, restic, record))
    apply_retention(config, policy, restic, listings, record)


def _store_manifest(
    config: AgentConfig, policy: PolicyConfig, target: PostgresTargetConfig, database: str, level: Level,
    restic: Restic, dumped: StreamedDump, schema_digest: str, tables: list[TableChecksum], *,
    session_snapshot: str, record: ResultRecord,
) -> bool:
    dump_id, dump_tree, dump_time = restic.identify(dumped.run)
    document = {
        "schema": MANIFEST_SCHEMA,
        "host": config.host,
        "policy": policy.name,
        "target": target.name,
        "database": database,
        "job_id": record.job_id,
        "level": level.value,
        "snapshot_id": dump_id,
        "exported_snapshot": session_snapshot,
        "schema_digest": schema_digest,
        "dump": {"filename": f"{database}.dump", "format": "custom", "digest": dumped.digest, "bytes": dumped.size},
        "tables": [{"schema": t.schema, "name": t.name, "rows": t.rows, "checksum": t.checksum} for t in tables],
        "checksum": "sum(hashtextextended(row::text, 0)) mod 2^64",
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashing.digest_bytes("sha256", data)
    with tempfile.TemporaryFile() as stream:
        stream.write(data)
        stream.seek(0)
        try:
            stored = restic.backup_stdin(
                stream, filename=f"{database}.manifest.json", host=config.host,
                tags=[catalog.tag("job", record.job_id), catalog.tag("policy", policy.name),
                      catalog.tag("target", target.name), catalog.tag("level", level.value),
                      catalog.tag("database", database), catalog.tag("part", "manifest"),
                      catalog.tag("for", dump_id), catalog.tag("digest", digest)],
            )
            manifest_id = restic.identify(stored)[0]
        except ResticError as error:
            record.add("manifest_store_failed", "error", error.describe())
            restic.forget_quietly([dump_id])  # a dump without its manifest must not look complete
            return False
    StateDir(config.state_dir).save_manifest(dump_id, data)
    record.details["snapshot"] = {"id": dump_id, "time": iso(dump_time), "tree": dump_tree}
    record.details["restic"]["summary"] = dumped.run.summary.as_record()
    record.details["manifest"] = {
        "digest": digest,
        "snapshot_id": manifest_id,
        "schema_digest": schema_digest,
        "dump_digest": dumped.digest,
        "dump_bytes": dumped.size,
        "tables": len(tables),
        "rows": sum(t.rows for t in tables),
    }
    return True
