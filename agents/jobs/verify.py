"""The verify job: restore backups into scratch and compare them with the manifests taken at backup time.

Steps, each timed in the record:

1. ``restic check`` starts, in the background (structure, plus a rotating
   ``--read-data-subset n/N`` so every pack is read within N verifications);
   its result is in every record, also when nothing could be chosen.
2. Beside it, without a lock (``beside_check``): the snapshots are listed to
   find the backups; the newest files backup the records name is restored at
   once (``restore_ahead``), used only if the listing chose that snapshot.
3. For each backup chosen, in a fresh scratch directory: a files snapshot is
   restored (beside the check when it still runs), or a throwaway database
   instance starts and the dump's manifest is read; nothing of it is used
   unless the check passed. Then restore (what is not restored yet) and
   compare (files: ``verify_files``; database dumps: ``verify_dump``, through
   the target kind's engine); the scratch directory is removed, pass or fail.

One record per backup verified; verdict ``passed`` (no failure finding),
``failed`` (findings), or ``error`` (could not verify -- never a pass).

Only snapshots a signed backup record names are verified (``anchors.py``):
``snapshot: latest`` is the newest *recorded* backup (of each database of a
database target, and of its global objects), and newer snapshots no record
names are reported as ``unrecorded_snapshot`` warnings -- someone with the
repository password wrote them; a given snapshot no record names fails with
``unrecorded_snapshot`` and is not restored.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.config.model import AgentConfig
from agents.contract import signing
from agents.contract.jobs import LATEST, VerifyJob
from agents.contract.records import (
    BackupRecord,
    RepositoryRef,
    ResticInfo,
    ScratchInfo,
    SignedRecord,
    Verdict,
    VerifiedSnapshot,
)
from agents.jobs import catalog
from agents.jobs.anchors import Anchors, collect_anchors
from agents.jobs.check import DRILL_CHECKS, BackgroundCheck
from agents.jobs.leftovers import clean_up_killed_jobs
from agents.jobs.verify_common import CheckGate, CouldNotVerify
from agents.jobs.verify_files import RestoreAhead, restore_ahead, verify_files_backup
from agents.records import RecordDraft, VerifyDraft, job_record
from agents.repositories import open_outbox, open_record_store, open_repository
from agents.restic.runner import Restic, ResticError
from agents.scratch.account import ScratchUnusable
from agents.scratch.config import ScratchConfig, make_scratch_config
from agents.scratch.reaper import reap, scratch_directory
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


@dataclass(frozen=True)
class Chosen:
    """A backup to verify and the signed record that vouches for it."""

    backup: catalog.StoredBackup
    record: BackupRecord


@dataclass
class Selection:
    chosen: list[Chosen] = field(default_factory=list)
    unrecorded: list[catalog.StoredBackup] = field(default_factory=list)  # skipped: no record names them
    refused: catalog.StoredBackup | None = None  # the snapshot asked for, which no record names


def select_backups(backups: list[catalog.StoredBackup], job: VerifyJob, anchors: Anchors) -> Selection:
    """The recorded backups ``job`` asks for; newer unrecorded ones (``latest``) or the unrecorded one asked for."""
    if job.database is not None:
        backups = [b for b in backups if b.database == job.database]
    selection = Selection()
    if job.snapshot != LATEST:
        wanted = job.snapshot
        matching = [b for b in backups if b.snapshot_id.startswith(wanted)
                    or (b.manifest_snapshot_id or "").startswith(wanted)][-1:]
        for backup in matching:
            record = anchors.record_for(backup)
            if record is None:
                selection.refused = backup
            else:
                selection.chosen.append(Chosen(backup, record))
        return selection
    newest: dict[str | None, Chosen] = {}
    for backup in reversed(backups):  # newest first: the first recorded one of each database wins
        if backup.database in newest:
            continue
        record = anchors.record_for(backup)
        if record is None:
            selection.unrecorded.append(backup)
        else:
            newest[backup.database] = Chosen(backup, record)
    # Pseudo-databases ("@globals", verified by digest alone) last: the first backup verified starts its scratch
    # instance while the repository is checked, and they have none to start.
    selection.chosen = sorted(newest.values(), key=lambda c: (
        c.backup.database is not None, (c.backup.database or "").startswith("@"), c.backup.database or ""))
    return selection


def _unrecorded_message(backup: catalog.StoredBackup) -> str:
    what = f"database {backup.database} of " if backup.database else ""
    return (f"snapshot {backup.snapshot_id[:12]} ({what}target {backup.target}, {backup.time.isoformat()}) carries "
            "drill's tags, but no backup record signed by a trusted key names it: it was written by someone holding "
            "the repository password, not by this agent's backup")


def run_verify(config: AgentConfig, job: VerifyJob, kind: str) -> list[SignedRecord]:
    """Verify the backups ``job`` names (``kind``: the target's kind); always returns their written records."""
    scratch = scratch_settings(config, job)
    config = replace(config, scratch=scratch)
    state = StateDir(config.state_dir)
    outbox = open_outbox(config)
    backup_host = job.backup_host or config.host
    first = _new_draft(config, job, scratch, kind)
    selection = Selection()
    with job_record(outbox, first):
        if backup_host == config.host:
            clean_up_killed_jobs(config)  # this agent's killed backups must not show as someone else's snapshots
        anchors, problems = collect_anchors(open_record_store(config), job.backup_records, _keys(job))
        for problem in problems:
            first.add("backup_record_invalid", "warning", f"not used: {problem}")
        try:
            restic = open_repository(config, job.repository)
            first.details.restic = ResticInfo(version=str(restic.version))
        except ResticError as error:
            first.add("could_not_verify", "error", error.describe())
        else:
            # The check starts first, the snapshots are listed beside it (each restic command spends half a second
            # deriving the key before it does anything); it is in the first record's timings unless another
            # verification of the drill ran it, and every record carries its result.
            check, ran_by = DRILL_CHECKS.start_or_join(restic, state, job.repository, job.read_data_parts,
                                                       job.drill_id, timed=first)
            _note_shared(first, ran_by, job)
            try:
                with contextlib.ExitStack() as ahead_stack:
                    ahead = _restore_ahead(restic, job, kind, backup_host, anchors, check, first, ahead_stack)
                    selection = _select(restic, job, backup_host, anchors, first)
                    if selection.chosen:
                        _verify_one(config, restic, selection.chosen[0], check, kind, state, first, ahead)
                    else:
                        ahead_stack.close()  # stopped and removed now, not after a whole check
                        _settle_with_nothing_restored(check, first)
            finally:
                check.wait()  # no restic check is left running behind the job, whatever happened
    records = [first.written()]
    for chosen in selection.chosen[1:]:
        draft = _new_draft(config, job, scratch, kind)
        draft.details.restic = first.details.restic
        with job_record(outbox, draft):
            _note_shared(draft, ran_by, job)
            _verify_one(config, restic, chosen, check, kind, state, draft)
        records.append(draft.written())
    return records


def _restore_ahead(restic: Restic, job: VerifyJob, kind: str, backup_host: str, anchors: Anchors,
                   check: BackgroundCheck, first: RecordDraft[VerifyDraft],
                   stack: contextlib.ExitStack) -> RestoreAhead | None:
    """For the newest backup of a files target, the restore of the snapshot the records say is newest, started
    before the listing (:func:`~agents.jobs.verify_files.restore_ahead`); None for anything else, and when the
    check has ended already (a drill's shared check): a restore without a lock is only taken beside one."""
    if kind != "files" or job.snapshot != LATEST or job.database is not None or check.done:
        return None
    guess = anchors.newest_files_snapshot(backup_host, job.target, job.repository)
    if guess is None:
        return None
    return restore_ahead(restic, guess, first.details.scratch.directory, stack)


def _select(restic: Restic, job: VerifyJob, backup_host: str, anchors: Anchors,
            first: RecordDraft[VerifyDraft]) -> Selection:
    """The backups to verify, from a listing taken beside the check; what is wrong with them is in ``first``
    (nothing is chosen when the listing failed, a snapshot asked for is unrecorded, or nothing was backed up)."""
    try:
        listing = restic.snapshots(host=backup_host, first_contact=True, beside_check=True)
    except ResticError as error:
        first.add("could_not_verify", "error", error.describe())
        return Selection()
    selection = select_backups(catalog.collect_backups(listing, host=backup_host, target=job.target, strict=False),
                               job, anchors)
    for backup in selection.unrecorded:
        first.add("unrecorded_snapshot", "warning", _unrecorded_message(backup), backup.snapshot_id)
    if selection.refused is not None:
        first.add("unrecorded_snapshot", "error", _unrecorded_message(selection.refused),
                  selection.refused.snapshot_id)
    elif not selection.chosen:
        what = f"database {job.database!r} of target" if job.database else "target"
        first.add("no_restorable_snapshot", "error",
                  f"no recorded backup of {what} {job.target!r} from host {backup_host!r} in {job.repository!r}"
                  + (f" with snapshot id {job.snapshot}" if job.snapshot != LATEST else ""))
    return selection


def _settle_with_nothing_restored(check: BackgroundCheck, first: RecordDraft[VerifyDraft]) -> None:
    """The check's result in the record of a verification that restored nothing; ``failed`` when the snapshot
    asked for is unrecorded or the check found damage (a failed backup, not a verification that could not run).
    When the listing could not run, the check's own failure (the same cause, as a rule) is not said twice."""
    listing_failed = any(f.code == "could_not_verify" for f in first.findings)
    CheckGate(check, first).settle(report_error=not listing_failed)
    if any(f.code in ("unrecorded_snapshot", "repository_damaged") and f.severity == "error"
           for f in first.findings):
        first.details.verdict = "failed"


def _note_shared(record: RecordDraft[VerifyDraft], ran_by: str | None, job: VerifyJob) -> None:
    if ran_by is not None:
        record.add("check_shared", "info", f"the repository was checked once for drill {job.drill_id}, by "
                   f"verification job {ran_by}; this record carries that check's result")


def _keys(job: VerifyJob) -> dict[str, Ed25519PublicKey]:
    """The keys the job names for its backup records, each under its id in every digest; a bad PEM is skipped."""
    keys = {}
    for pem in job.trusted_keys.values():
        try:
            public = signing.load_public_pem(pem)
        except signing.SignatureError:
            continue
        keys.update({signing.key_id(public, digest): public for digest in signing.DIGESTS})
    return keys


def _verify_one(
    config: AgentConfig, restic: Restic, chosen: Chosen, check: BackgroundCheck, kind: str,
    state: StateDir, record: RecordDraft[VerifyDraft], ahead: RestoreAhead | None = None,
) -> None:
    gate = CheckGate(check, record)  # asked before anything is restored
    verdict: Verdict = "error"
    try:
        try:
            backup = chosen.backup
            record.details.snapshot = VerifiedSnapshot(
                id=backup.snapshot_id, time=backup.time, job_id=backup.job_id, level=backup.level,
                database=backup.database, manifest_snapshot_id=backup.manifest_snapshot_id)
            # Once the check is known to have failed, no scratch instance is started for nothing.
            if not gate.known or gate():
                _in_scratch(config, restic, chosen, kind, state, record, gate, ahead)
        finally:
            gate.settle()  # the check's result is in every record, also when the scratch failed first
        verdict = "failed" if record.has_errors else "passed"
    except CouldNotVerify as error:
        record.add("could_not_verify", "error", str(error))
        verdict = "failed" if any(f.code != "could_not_verify" and f.severity == "error"
                                  for f in record.findings) else "error"
    record.details.verdict = verdict
    record.outcome = "success" if verdict == "passed" else "failed"


def _in_scratch(
    config: AgentConfig, restic: Restic, chosen: Chosen, kind: str, state: StateDir,
    record: RecordDraft[VerifyDraft], repository_sound: CheckGate, ahead: RestoreAhead | None = None,
) -> None:
    if ahead is not None and ahead.snapshot_id == chosen.backup.snapshot_id:
        verify_files_backup(restic, chosen.backup, chosen.record, ahead.scratch, record, repository_sound, ahead.work)
        return
    if ahead is not None:  # the listing chose another snapshot than the records' newest: that restore is not used
        ahead.abandon()
    parent = record.details.scratch.directory
    reap(parent)  # what verifications that died left behind
    try:
        with scratch_directory(parent) as scratch:
            if chosen.backup.database is None:
                verify_files_backup(restic, chosen.backup, chosen.record, scratch, record, repository_sound)
            else:
                # Imported here: the database drivers cost a files-only run ~0.1 s of start-up.
                from agents.jobs.verify_dump import verify_dump_backup  # noqa: PLC0415

                verify_dump_backup(config, kind, restic, chosen.backup, chosen.record, scratch, state, record,
                                   repository_sound)
    except ScratchUnusable as error:  # the scratch directory or a throwaway instance could not be set up
        raise CouldNotVerify(str(error)) from error
