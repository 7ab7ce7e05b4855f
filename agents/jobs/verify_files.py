"""Verifying a files backup: restore the snapshot into scratch, re-hash every entry, compare with the manifest."""

from __future__ import annotations

import io
import os
import shutil

from agents.contract.records import BackupRecord, Compared, Severity
from agents.jobs.beside_check import BesideCheck
from agents.jobs.catalog import StoredBackup
from agents.jobs.verify_common import (
    CheckGate,
    CouldNotVerify,
    check_manifest_digest,
    check_manifest_size,
    manifest_limit,
    note_damage,
)
from agents.records import RecordDraft, VerifyDraft
from agents.restic.runner import Restic, ResticError
from targets.files.manifest import ManifestError
from targets.files.manifest_store import MAGIC, ManifestReader, parse_manifest
from targets.files.verify import compare_restored, compare_stream


def verify_files_backup(
    restic: Restic, backup: StoredBackup, vouching: BackupRecord, scratch: str, record: RecordDraft[VerifyDraft],
    repository_sound: CheckGate,
) -> None:
    """Restore ``backup`` under ``scratch`` and add a finding for every difference from its manifest.

    While the repository is still being checked, the snapshot is restored beside the check without a lock
    (:mod:`agents.jobs.beside_check`); ``repository_sound`` waits for the check, and nothing restored is compared
    unless it passed (a restore beside a failed check is stopped and left to the scratch directory's removal).
    Raises :class:`CouldNotVerify` when the check or the restore could not be done.
    """
    early = None
    if not repository_sound.known:
        beside = os.path.join(scratch, "files")
        early = BesideCheck("restore", lambda stop: restic.restore(backup.snapshot_id, beside, beside_check=True,
                                                                   cancellation=stop))
    try:
        if not repository_sound():
            return
        restored = _restored(restic, backup, scratch, record, early)
    finally:
        if early is not None:
            early.drop()
    if restored is not None:
        _compare(backup, vouching, restored, record)


def _restored(restic: Restic, backup: StoredBackup, scratch: str, record: RecordDraft[VerifyDraft],
              early: BesideCheck[None] | None) -> str | None:
    """Where the snapshot was restored: beside the check, or now, with a lock, when that did not succeed; None
    (with ``repository_damaged``) when restic found stored data bad. Raises :class:`CouldNotVerify`."""
    if early is not None:
        succeeded, _ = early.result()
        record.add_phase("restore", early.seconds)
        if succeeded:
            return os.path.join(scratch, "files")
        shutil.rmtree(os.path.join(scratch, "files"), ignore_errors=True)  # what it left, before restoring again
    directory = os.path.join(scratch, "files" if early is None else "files-locked")
    with record.phase("restore"):
        try:
            restic.restore(backup.snapshot_id, directory)
        except ResticError as error:
            if note_damage(error, record):
                return None
            raise CouldNotVerify(f"restore failed: {error.describe()}") from error
    return directory


def _compare(backup: StoredBackup, vouching: BackupRecord, scratch: str, record: RecordDraft[VerifyDraft]) -> None:
    """Check the restored manifest against the record vouching for it, then every restored file against it."""
    manifest_file = os.path.join(scratch, backup.manifest_path.lstrip("/"))
    try:
        fd = os.open(manifest_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        record.add("manifest_missing", "error", f"the snapshot holds no manifest at {backup.manifest_path}")
        return
    with os.fdopen(fd, "rb") as handle:
        if not check_manifest_size(os.fstat(handle.fileno()).st_size, vouching, record):
            return
        data = handle.read(manifest_limit(vouching) + 1)
    if not check_manifest_digest(data, vouching, record):
        return
    changed = set(vouching.changed_during_backup)
    ignore = {backup.manifest_path}
    try:
        with record.phase("compare"):
            if data.startswith(MAGIC):  # streamed: memory does not grow with the number of files
                reader = ManifestReader(io.BytesIO(data))
                comparison = compare_stream(reader, reader.algorithm, reader.roots, scratch, changed=changed,
                                            ignore=ignore)
                reader.manifest()  # the tail: counts agree
            else:
                comparison = compare_restored(parse_manifest(data), scratch, changed=changed, ignore=ignore)
    except ManifestError as error:
        record.add("manifest_unreadable", "error", str(error))
        return
    record.details.compared = Compared(files=comparison.files_compared, bytes=comparison.bytes_compared)
    for difference in comparison.differences:
        severity: Severity = "info" if difference.code == "changed_during_backup" else "error"
        record.add(difference.code, severity, difference.detail, difference.path)
