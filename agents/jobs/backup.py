"""The backup job: one target of one policy, at a level, into restic, with its manifest.

Steps, each timed in the record: decide the level from the repository's history
→ select the files → restic reads them while the agent hashes them (in parallel)
→ re-stat to find files that changed meanwhile → store the manifest as its own
snapshot beside the data → replicate both to the policy's other repositories and
prove the copies → apply retention. Every step that fails becomes a finding; the
record's outcome is ``success`` only if nothing went wrong.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents import process
from agents.config.model import AgentConfig
from agents.jobs import catalog
from agents.jobs.replication import apply_retention, replicate
from agents.records import Outbox, ResultRecord, decide_outcome, iso, job_record
from agents.repositories import open_repository
from agents.restic.exitcodes import ResticOutcome
from agents.restic.messages import BackupStatus
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from policies.config import PolicyConfig
from policies.due import level_for_day
from policies.levels import Level, LevelDecision, choose_level
from targets import hashing
from targets.files import manifest as files_manifest
from targets.files.config import FilesTargetConfig
from targets.files.select import select_paths

log = logging.getLogger(__name__)

# Digest of the manifest document itself, as written in records and tags.
MANIFEST_DIGEST_ALGORITHM = "sha256"

ProgressCallback = Callable[[str, BackupStatus], None]

# restic outcomes that are facts about the repository, each with its finding code.
_FINDING_CODES = {
    ResticOutcome.WRONG_PASSWORD: "wrong_password",
    ResticOutcome.NO_REPOSITORY: "repository_missing",
    ResticOutcome.UNREACHABLE: "repository_unreachable",
    ResticOutcome.LOCKED: "repository_locked",
    ResticOutcome.INTERRUPTED: "interrupted",
}


def finding_code(error: ResticError) -> str:
    return _FINDING_CODES.get(error.outcome, "restic_failed")


@dataclass(frozen=True)
class JobContext:
    config: AgentConfig
    policy: PolicyConfig
    state: StateDir
    progress: ProgressCallback | None


def run_policy_backup(
    config: AgentConfig,
    policy_name: str,
    level: Level | None = None,
    *,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
) -> list[ResultRecord]:
    """Back up every target of ``policy_name``; one record per target, in the outbox.

    ``level`` None means: the level the policy's calendar gives for today.
    Raises ``PolicyBusy`` when the policy is already running, ``KeyError`` for
    an unknown policy. Job failures do not raise: they are in the records.
    """
    policy = config.policies[policy_name]
    moment = now or datetime.now().astimezone()
    requested = level or level_for_day(policy.calendars, moment)
    state = StateDir(config.state_dir)
    context = JobContext(config, policy, state, progress)
    records = []
    with state.policy_lock(policy_name):
        for target_name in policy.targets:
            if process.CANCELLATION.is_cancelled:
                break
            records.append(run_target_backup(context, target_name, requested))
    return records


def run_target_backup(context: JobContext, target_name: str, requested: Level) -> ResultRecord:
    """Back up one target; always returns its (written) record, never raises for job failures."""
    config, policy = context.config, context.policy
    target = config.targets[target_name]
    repository = config.repositories[policy.repository]
    record = ResultRecord("backup", host=config.host)
    record.details = {
        "policy": policy.name,
        "target": {"name": target.name, "kind": target.kind},
        "repository": {"name": repository.name, "site": config.sites[repository.name]},
        "level": {"requested": requested.value},
        "base_snapshot_id": None,
        "snapshot": None,
        "manifest": None,
        "restic": None,
        "replication": [],
        "retention": {},
    }
    try:
        with job_record(Outbox(config.state_dir), record):
            complete = _run(context, target, requested, record)
            record.outcome = decide_outcome(record, complete=complete)
    except Exception:  # the record says what happened; the next target still runs
        log.exception("backup of %s/%s failed unexpectedly", policy.name, target_name)
    return record


def _run(context: JobContext, target: FilesTargetConfig, requested: Level, record: ResultRecord) -> bool:
    config, policy = context.config, context.policy
    try:
        restic = open_repository(config, policy.repository)
        record.details["restic"] = {"version": str(restic.version), "summary": None}
        with record.phase("plan"):
            history = catalog.collect_backups(
                restic.snapshots(host=config.host, first_contact=True),
                host=config.host,
                policy=policy.name,
                target=target.name,
            )
            decision = choose_level(
                requested, [b.as_point() for b in history], datetime.now().astimezone(), policy.max_full_interval
            )
        record.details["level"] = {
            "requested": decision.requested.value,
            "effective": decision.level.value,
            "reason": decision.reason,
        }
        if decision.level is not requested:
            record.add("level_upgraded", "info", decision.reason)
        base_backup = catalog.find_backup(history, decision.base.snapshot_id) if decision.base else None
        record.details["base_snapshot_id"] = decision.base.snapshot_id if decision.base else None
        if not _backup_files(context, restic, target, decision, base_backup, record):
            return False
        with record.phase("list"):
            backups = catalog.collect_backups(
                restic.snapshots(host=config.host), host=config.host, policy=policy.name, target=target.name
            )
    except ResticError as error:
        record.add(finding_code(error), "error", error.describe(), error.repository or None)
        return False
    this_job = next((b for b in backups if b.job_id == record.job_id), None)
    if this_job is None or this_job.manifest is None:
        record.add("snapshot_not_listed", "error", "the new snapshot or its manifest is not listed by restic")
        return False
    record.details["snapshot"] = {"id": this_job.data.id, "time": iso(this_job.data.time), "tree": this_job.data.tree}
    record.details["manifest"]["snapshot_id"] = this_job.manifest.id
    listings = {policy.repository: backups}
    listings.update(replicate(config, policy, restic, backups, record))
    apply_retention(config, policy, restic, listings, record)
    return True


def _load_base_entries(
    state: StateDir, restic: Restic, base: catalog.StoredBackup | None, record: ResultRecord
) -> dict[str, files_manifest.FileEntry] | None:
    """The base's manifest entries: local copy first, else from the repository; None if unusable."""
    if base is None or base.manifest is None:
        return None
    data = state.load_manifest(base.data.id)
    if data is None or hashing.digest_bytes(MANIFEST_DIGEST_ALGORITHM, data) != base.manifest_digest:
        data = restic.dump(base.manifest.id, catalog.MANIFEST_PATH)
    if hashing.digest_bytes(MANIFEST_DIGEST_ALGORITHM, data) != base.manifest_digest:
        record.add(
            "base_manifest_mismatch",
            "warning",
            f"the manifest of base snapshot {base.data.id[:12]} does not match its digest; every file is re-hashed",
        )
        return None
    return files_manifest.index_entries(files_manifest.parse_manifest(data).entries)


def _backup_files(
    context: JobContext,
    restic: Restic,
    target: FilesTargetConfig,
    decision: LevelDecision,
    base: catalog.StoredBackup | None,
    record: ResultRecord,
) -> bool:
    """Run restic and the hashing side by side, then store the manifest. True when both are stored."""
    config, policy, state = context.config, context.policy, context.state
    with record.phase("select"):
        selection = select_paths(target.paths, target.exclude)
    for root in selection.missing_roots:
        record.add("source_missing", "error", f"source path {root} does not exist", root)
    for path, reason in selection.unreadable_dirs:
        record.add("unreadable", "error", f"directory {path} cannot be read: {reason}", path)
    if not selection.found:
        record.add("nothing_to_back_up", "error", "none of the target's paths exists; no snapshot was made")
        return False
    base_entries = (
        _load_base_entries(state, restic, base, record) if decision.level is not Level.FULL else None
    )

    hashed: dict[str, Any] = {}
    stop_hashing = threading.Event()

    def hash_all() -> None:
        try:
            hashed["result"] = files_manifest.build_entries(
                selection, target.hash, base_entries, should_stop=stop_hashing.is_set
            )
        except BaseException as exc:  # surfaced after the join below
            hashed["error"] = exc

    progress = context.progress

    def report(status: BackupStatus) -> None:
        if progress is not None:
            progress(target.name, status)

    job_id = record.job_id
    base_id = decision.base.snapshot_id if decision.base else None
    hasher = threading.Thread(target=hash_all, name="manifest-hash", daemon=True)
    with record.phase("backup"):
        hasher.start()
        try:
            run = restic.backup_files(
                selection.restic_paths(),
                host=config.host,
                tags=catalog.make_data_tags(job_id, policy.name, target.name, decision.level, base_id),
                parent=base_id,
                force=decision.level is Level.FULL,
                on_status=report,
            )
        except BaseException:
            stop_hashing.set()
            hasher.join()
            raise
        hasher.join()
    if "error" in hashed:
        raise hashed["error"]
    entries, unreadable, hashed_files, hashed_bytes, reused = hashed["result"]
    snapshot_id = run.summary.snapshot_id
    record.details["snapshot"] = {"id": snapshot_id}
    record.details["restic"]["summary"] = run.summary.as_record()

    # What restic could not read is not in the snapshot: take it out of the manifest too.
    restic_unreadable = {e.item: e.message for e in run.errors if e.item}
    known = {u["path"] for u in unreadable}
    unreadable += [{"path": p, "error": m} for p, m in sorted(restic_unreadable.items()) if p not in known]
    entries = [e for e in entries if e.path not in restic_unreadable]
    entries = files_manifest.mark_changed_since(entries)
    for item in unreadable:
        record.add("unreadable", "error", f"{item['path']} could not be read: {item['error']}", item["path"])
    if run.partial and not unreadable:
        record.add("restic_partial", "error", "restic reported that some source data could not be read")

    manifest = files_manifest.FilesManifest(
        algorithm=target.hash,
        host=config.host,
        policy=policy.name,
        target=target.name,
        job_id=job_id,
        level=decision.level.value,
        roots=list(target.paths),
        exclude=list(target.exclude),
        entries=entries,
        unreadable=unreadable,
        missing_roots=selection.missing_roots,
        snapshot_id=snapshot_id,
        base_snapshot_id=base_id,
        hashed_files=hashed_files,
        hashed_bytes=hashed_bytes,
        reused_hashes=reused,
    )
    for path in manifest.changed_during_backup:
        record.add("changed_during_backup", "warning", f"{path} changed while it was being backed up", path)
    data = manifest.to_bytes()
    digest = hashing.digest_bytes(MANIFEST_DIGEST_ALGORITHM, data)
    outcome = "partial" if record.has_errors else "success"
    with record.phase("manifest"):
        with tempfile.TemporaryFile() as stream:
            stream.write(data)
            stream.seek(0)
            restic.backup_stdin(
                stream,
                filename=catalog.MANIFEST_FILENAME,
                host=config.host,
                tags=catalog.make_manifest_tags(
                    job_id, policy.name, target.name, decision.level, snapshot_id, outcome, digest
                ),
            )
        state.save_manifest(snapshot_id, data)
    record.details["manifest"] = {
        "digest": digest,
        "snapshot_id": None,  # known once listed
        "algorithm": target.hash,
        "files": manifest.files,
        "bytes": manifest.total_bytes,
        "entries": len(entries),
        "hashed_files": hashed_files,
        "hashed_bytes": hashed_bytes,
        "reused_hashes": reused,
        "changed_during_backup": len(manifest.changed_during_backup),
        "unreadable": len(unreadable),
    }
    log.info(
        "%s/%s: %s snapshot %s, %d files, manifest %s",
        policy.name, target.name, decision.level.value, snapshot_id[:12], manifest.files, digest[:19],
    )
    return True
