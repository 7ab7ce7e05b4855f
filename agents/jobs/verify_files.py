"""Verifying a files backup: restore the snapshot into scratch, re-hash every entry, compare with the manifest."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

from agents.contract.records import BackupRecord, Compared, Severity
from agents.jobs.catalog import StoredBackup
from agents.jobs.verify_common import (
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
    repository_sound: Callable[[], bool],
) -> None:
    """Restore ``backup`` under ``scratch`` and add a finding for every difference from its manifest.

    ``repository_sound`` waits for the repository check (nothing is restored unless it passed). Raises
    :class:`CouldNotVerify` when the check or the restore could not be done.
    """
    if not repository_sound():
        return
    scratch = os.path.join(scratch, "files")  # beside the scratch directory's own bookkeeping
    with record.phase("restore"):
        try:
            restic.restore(backup.snapshot_id, scratch)
        except ResticError as error:
            if note_damage(error, record):
                return
            raise CouldNotVerify(f"restore failed: {error.describe()}") from error
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
