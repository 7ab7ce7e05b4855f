"""The verify job for files targets: restore a snapshot into scratch, compare it with its manifest.

Steps, each timed in the record: find the backup → ``restic check`` (structure,
plus a rotating ``--read-data-subset n/N`` so every pack is read within N
verifications) → restore into a fresh scratch directory → check the manifest's
digest against the backup record (or, without one, the snapshot's tag) →
re-hash and compare every entry → remove the scratch directory, pass or fail.
Verdict: ``passed`` (no failure finding), ``failed`` (findings), or ``error``
(could not verify -- never a pass).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from agents.config.model import AgentConfig
from agents.jobs import catalog
from agents.records import Outbox, ResultRecord, job_record
from agents.repositories import open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from targets import hashing
from targets.files.manifest import ManifestError, parse_manifest
from targets.files.verify import compare_restored

DEFAULT_CHECK_PARTS = 30  # every pack read within this many verifications


@dataclass(frozen=True)
class VerifyRequest:
    repository: str
    target: str
    snapshot_id: str | None  # None: the latest backup of the target
    host: str
    scratch: str | None
    check_parts: int = DEFAULT_CHECK_PARTS


def _backup_record(state: StateDir, job_id: str) -> dict[str, object] | None:
    """The backup's own record from this agent's outbox, when it is on this host."""
    for path in Outbox(state.path).list():
        if job_id in os.path.basename(path):
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            if isinstance(document, dict):
                return document
    return None


def _next_check_part(state: StateDir, repository: str, parts: int) -> int:
    """The rotating cursor of ``--read-data-subset``: part 1..parts, one further at each verification."""
    path = os.path.join(state.sub("verify"), f"{repository}.cursor")
    try:
        with open(path, encoding="utf-8") as handle:
            last = int(handle.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        last = 0
    part = last % parts + 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(str(part))
    return part


def run_verify(config: AgentConfig, request: VerifyRequest) -> ResultRecord:
    """Verify one backup; always returns its written record (outcome passed/failed/error)."""
    state = StateDir(config.state_dir)
    record = ResultRecord("verify", host=config.host)
    record.details = {
        "repository": {"name": request.repository, "site": config.sites.get(request.repository, request.repository)},
        "target": request.target,
        "backup_host": request.host,
        "snapshot": None,
        "manifest": None,
        "compared": {"files": 0, "bytes": 0},
        "check": None,
        "verdict": "error",
    }
    with job_record(Outbox(config.state_dir), record):
        record.details["verdict"] = _verify(config, request, state, record)
        record.outcome = {"passed": "success", "failed": "failed", "error": "failed"}[record.details["verdict"]]
    return record


def _verify(config: AgentConfig, request: VerifyRequest, state: StateDir, record: ResultRecord) -> str:
    try:
        restic = open_repository(config, request.repository)
        record.details["restic"] = {"version": str(restic.version)}
        backups = catalog.collect_backups(restic.snapshots(host=request.host, first_contact=True),
                                          host=request.host, target=request.target)
    except ResticError as error:
        record.add("could_not_verify", "error", error.describe())
        return "error"
    files_backups = [b for b in backups if b.database is None]
    if request.snapshot_id is None:
        backup = files_backups[-1] if files_backups else None
    else:
        backup = next((b for b in files_backups if b.snapshot_id.startswith(request.snapshot_id)), None)
    if backup is None:
        record.add("no_restorable_snapshot", "error",
                   f"no backup of target {request.target!r} from host {request.host!r} in {request.repository!r}")
        return "error"
    record.details["snapshot"] = {"id": backup.snapshot_id, "time": backup.time.isoformat(), "job_id": backup.job_id}

    part = _next_check_part(state, request.repository, request.check_parts)
    with record.phase("check"):
        try:
            ok, problems = restic.check(f"{part}/{request.check_parts}")
        except ResticError as error:
            record.add("could_not_verify", "error", f"restic check could not run: {error.describe()}")
            return "error"
    record.details["check"] = {"read_data_subset": f"{part}/{request.check_parts}", "passed": ok,
                               "coverage": f"{part} of {request.check_parts} parts read in this cycle"}
    for problem in problems:
        record.add("repository_damaged", "error", problem)

    scratch_parent = request.scratch or state.sub("scratch")
    os.makedirs(scratch_parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="verify-", dir=scratch_parent)
    try:
        return _restore_and_compare(restic, backup, scratch, state, record) if ok else "failed"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _restore_and_compare(
    restic: Restic, backup: catalog.StoredBackup, scratch: str, state: StateDir, record: ResultRecord
) -> str:
    with record.phase("restore"):
        try:
            restic.restore(backup.snapshot_id, scratch)
        except ResticError as error:
            record.add("could_not_verify", "error", f"restore failed: {error.describe()}")
            return "error"
    manifest_file = os.path.join(scratch, backup.manifest_path.lstrip("/"))
    try:
        with open(manifest_file, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        record.add("manifest_missing", "error", f"the snapshot holds no manifest at {backup.manifest_path}")
        return "failed"
    backup_record = _backup_record(state, backup.job_id)
    trusted = (backup_record or {}).get("manifest", {}) if backup_record else {}
    expected = trusted.get("digest") if isinstance(trusted, dict) else None
    source = "backup record" if expected else "snapshot tag"
    expected = expected or backup.manifest_digest
    digest = hashing.digest_bytes("sha256", data)
    record.details["manifest"] = {"digest": digest, "expected": expected, "checked_against": source}
    if digest != expected:
        record.add("manifest_digest_mismatch", "error",
                   f"the manifest in the snapshot has digest {digest}, the {source} says {expected}")
        return "failed"
    try:
        manifest = parse_manifest(data)
    except ManifestError as error:
        record.add("manifest_unreadable", "error", str(error))
        return "failed"
    listed = (backup_record or {}).get("changed_during_backup") or []
    changed = {str(p) for p in listed} if isinstance(listed, list) else set()
    with record.phase("compare"):
        comparison = compare_restored(manifest, scratch, changed=changed, ignore={backup.manifest_path})
    record.details["compared"] = {"files": comparison.files_compared, "bytes": comparison.bytes_compared}
    for difference in comparison.differences:
        severity = "info" if difference.code == "changed_during_backup" else "error"
        record.add(difference.code, severity, difference.detail, difference.path)
    return "failed" if comparison.failures or record.has_errors else "passed"
