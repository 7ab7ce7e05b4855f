"""The verify job: restore backups into scratch and compare them with the manifests taken at backup time.

Steps, each timed in the record: find the backups → ``restic check`` (structure,
plus a rotating ``--read-data-subset n/N`` so every pack is read within N
verifications) → for each backup, a fresh scratch directory → restore and
compare (files: ``verify_files``; database dumps: ``verify_dump``, through the
target kind's engine) → remove the scratch directory, pass or fail. One record
per backup verified; verdict ``passed`` (no failure finding), ``failed``
(findings), or ``error`` (could not verify -- never a pass).

For a database target, ``snapshot: latest`` verifies the newest dump of each of
its databases (and of its global objects).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace

from agents.config.model import AgentConfig
from agents.contract.jobs import LATEST, VerifyJob
from agents.contract.records import RepositoryRef, ResticInfo, ScratchInfo, SignedRecord, Verdict, VerifiedSnapshot
from agents.jobs import catalog
from agents.jobs.check import CheckOutcome, run_check_part
from agents.jobs.verify_common import CouldNotVerify
from agents.jobs.verify_dump import verify_dump_backup
from agents.jobs.verify_files import verify_files_backup
from agents.records import RecordDraft, VerifyDraft, job_record
from agents.repositories import open_outbox, open_record_store, open_repository
from agents.restic.runner import Restic, ResticError
from agents.scratch.config import ScratchConfig, make_scratch_config
from agents.state import StateDir


def scratch_settings(config: AgentConfig, job: VerifyJob) -> ScratchConfig:
    """The agent's scratch section with the job's settings over it (top-level keys replace).

    ``job.scratch`` must have passed the scratch schema (``execute`` checks it).
    """
    if job.scratch is None:
        return config.scratch
    raw = dict(config.raw.get("scratch") or {})
    raw.update(job.scratch)
    return make_scratch_config(raw)


def _new_draft(config: AgentConfig, job: VerifyJob, scratch: ScratchConfig, kind: str) -> RecordDraft[VerifyDraft]:
    directory = scratch.directory or os.path.join(config.state_dir, "scratch")
    details = VerifyDraft(
        repository=RepositoryRef(name=job.repository, site=config.sites.get(job.repository, job.repository)),
        target=job.target, backup_host=job.backup_host or config.host,
        scratch=ScratchInfo(host=config.host, directory=directory, engine=None if kind == "files" else kind),
        verdict="error")
    return RecordDraft(config.host, details, request=job.id, drill_id=job.drill_id)


def _select(backups: list[catalog.StoredBackup], job: VerifyJob) -> list[catalog.StoredBackup]:
    if job.database is not None:
        backups = [b for b in backups if b.database == job.database]
    if job.snapshot != LATEST:
        wanted = job.snapshot
        return [b for b in backups if b.snapshot_id.startswith(wanted)
                or (b.manifest_snapshot_id or "").startswith(wanted)][-1:]
    newest: dict[str | None, catalog.StoredBackup] = {}
    for backup in backups:  # oldest first: the last one of each database wins
        newest[backup.database] = backup
    return sorted(newest.values(), key=lambda b: (b.database is not None, b.database or ""))


def run_verify(config: AgentConfig, job: VerifyJob, kind: str) -> list[SignedRecord]:
    """Verify the backups ``job`` names (``kind``: the target's kind); always returns their written records."""
    scratch = scratch_settings(config, job)
    config = replace(config, scratch=scratch)
    state = StateDir(config.state_dir)
    outbox = open_outbox(config)
    backup_host = job.backup_host or config.host
    first = _new_draft(config, job, scratch, kind)
    backups: list[catalog.StoredBackup] = []
    with job_record(outbox, first):
        try:
            restic = open_repository(config, job.repository)
            first.details.restic = ResticInfo(version=str(restic.version))
            backups = _select(catalog.collect_backups(
                restic.snapshots(host=backup_host, first_contact=True),
                host=backup_host, target=job.target, strict=False), job)
        except ResticError as error:
            first.add("could_not_verify", "error", error.describe())
        else:
            if not backups:
                what = f"database {job.database!r} of target" if job.database else "target"
                first.add("no_restorable_snapshot", "error",
                          f"no backup of {what} {job.target!r} from host {backup_host!r} in {job.repository!r}"
                          + (f" with snapshot id {job.snapshot}" if job.snapshot != LATEST else ""))
            else:
                with first.phase("check"):  # in the first record's timings; every record carries its result
                    check = run_check_part(restic, state, job.repository, job.read_data_parts)
                _verify_one(config, restic, backups[0], check, kind, state, first)
    records = [first.written()]
    for backup in backups[1:]:
        draft = _new_draft(config, job, scratch, kind)
        draft.details.restic = first.details.restic
        with job_record(outbox, draft):
            _verify_one(config, restic, backup, check, kind, state, draft)
        records.append(draft.written())
    return records


def _verify_one(
    config: AgentConfig, restic: Restic, backup: catalog.StoredBackup, check: CheckOutcome, kind: str,
    state: StateDir, record: RecordDraft[VerifyDraft],
) -> None:
    record.details.snapshot = VerifiedSnapshot(
        id=backup.snapshot_id, time=backup.time, job_id=backup.job_id, level=backup.level, database=backup.database,
        manifest_snapshot_id=backup.manifest_snapshot_id)
    record.details.check = check.result
    verdict: Verdict = "error"
    try:
        if check.error is not None:
            raise CouldNotVerify(check.error)
        for problem in check.result.problems:
            record.add("repository_damaged", "error", problem)
        if check.result.passed:
            _in_scratch(config, restic, backup, kind, state, record)
        verdict = "failed" if record.has_errors else "passed"
    except CouldNotVerify as error:
        record.add("could_not_verify", "error", str(error))
        verdict = "failed" if any(f.code != "could_not_verify" and f.severity == "error"
                                  for f in record.findings) else "error"
    record.details.verdict = verdict
    record.outcome = "success" if verdict == "passed" else "failed"


def _in_scratch(
    config: AgentConfig, restic: Restic, backup: catalog.StoredBackup, kind: str, state: StateDir,
    record: RecordDraft[VerifyDraft],
) -> None:
    parent = record.details.scratch.directory
    try:
        os.makedirs(parent, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="verify-", dir=parent)
    except OSError as error:
        raise CouldNotVerify(f"cannot create a scratch directory in {parent}: {error.strerror}") from error
    store = open_record_store(config)
    try:
        if backup.database is None:
            verify_files_backup(restic, backup, scratch, store, record)
        else:
            # Traverse only (not list): the throwaway instance runs as another account and must pass through.
            os.chmod(scratch, 0o711)  # noqa: S103
            verify_dump_backup(config, kind, restic, backup, scratch, state, store, record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
