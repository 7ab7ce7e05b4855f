"""Verifying a files backup: restore the snapshot into scratch, re-hash every entry, compare with the manifest."""

from __future__ import annotations

import os

from agents.contract.records import Compared, Severity
from agents.jobs.catalog import StoredBackup
from agents.jobs.verify_common import CouldNotVerify, backup_record, check_manifest_digest
from agents.outbox import RecordStore
from agents.records import RecordDraft, VerifyDraft
from agents.restic.runner import Restic, ResticError
from targets.files.manifest import ManifestError, parse_manifest
from targets.files.verify import compare_restored


def verify_files_backup(
    restic: Restic, backup: StoredBackup, scratch: str, store: RecordStore, record: RecordDraft[VerifyDraft]
) -> None:
    """Restore ``backup`` under ``scratch`` and add a finding for every difference from its manifest.

    Raises :class:`CouldNotVerify` when the restore could not be done.
    """
    with record.phase("restore"):
        try:
            restic.restore(backup.snapshot_id, scratch)
        except ResticError as error:
            raise CouldNotVerify(f"restore failed: {error.describe()}") from error
    manifest_file = os.path.join(scratch, backup.manifest_path.lstrip("/"))
    try:
        with open(manifest_file, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        record.add("manifest_missing", "error", f"the snapshot holds no manifest at {backup.manifest_path}")
        return
    if not check_manifest_digest(data, backup, store, record):
        return
    try:
        manifest = parse_manifest(data)
    except ManifestError as error:
        record.add("manifest_unreadable", "error", str(error))
        return
    own = backup_record(store, backup.job_id)
    changed = set(own.changed_during_backup) if own is not None else set()
    with record.phase("compare"):
        comparison = compare_restored(manifest, scratch, changed=changed, ignore={backup.manifest_path})
    record.details.compared = Compared(files=comparison.files_compared, bytes=comparison.bytes_compared)
    for difference in comparison.differences:
        severity: Severity = "info" if difference.code == "changed_during_backup" else "error"
        record.add(difference.code, severity, difference.detail, difference.path)
