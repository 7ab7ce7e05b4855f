"""Verifying a files backup: restore the snapshot into scratch, re-hash every entry, compare with the manifest."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from agents.contract.records import BackupRecord, Compared, Severity
from agents.jobs.beside_check import BesideCheck
from agents.jobs.catalog import StoredBackup
from agents.jobs.manifest_read import read_beside_check, vouched_manifest
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
from agents.scratch.account import ScratchUnusable
from agents.scratch.reaper import note_process, reap, scratch_directory
from targets.files.manifest import ManifestError
from targets.files.manifest_store import MAGIC, ManifestReader, parse_manifest
from targets.files.verify import compare_restored, compare_stream

FIRST_RESTORE = "files"  # under the scratch directory: where a snapshot is first restored (beside the check or not)


@dataclass(frozen=True)
class RestoreAhead:
    """A snapshot being restored before the listing chose it, beside the check, in a scratch directory of its own."""

    snapshot_id: str
    scratch: str
    work: BesideCheck[None]

    def abandon(self) -> None:
        """The listing chose another snapshot: stop this restore and remove what it wrote."""
        self.work.drop()
        shutil.rmtree(os.path.join(self.scratch, FIRST_RESTORE), ignore_errors=True)


def restore_ahead(restic: Restic, snapshot_id: str, parent: str, stack: contextlib.ExitStack) -> RestoreAhead | None:
    """Start restoring ``snapshot_id`` into a new scratch directory under ``parent`` (held and removed by
    ``stack``, the work stopped first), without a lock, at once.

    A verification lists the repository to choose what it verifies, and the listing's half second of key
    derivation stood before every restore. The newest recorded backup (``Anchors.newest_files_snapshot``) is
    almost always what the listing chooses, so its restore can start beside the listing and the check; it is used
    only when the listing chose that very snapshot (a restic snapshot id is the hash of the snapshot, tree
    included) and the check passed, and otherwise dropped. None when no scratch directory could be made: the
    verification proper then tries again and says why.
    """
    try:
        reap(parent)  # what verifications that died left behind
        scratch = stack.enter_context(scratch_directory(parent))
    except (ScratchUnusable, OSError):
        return None
    work = _restore_beside_check(restic, snapshot_id, scratch)
    stack.callback(work.drop)  # stopped before its directory is removed
    return RestoreAhead(snapshot_id, scratch, work)


def _restore_beside_check(restic: Restic, snapshot_id: str, scratch: str) -> BesideCheck[None]:
    """Restore ``snapshot_id`` into ``scratch``/files without a lock, started at once in a thread."""
    target = os.path.join(scratch, FIRST_RESTORE)
    return BesideCheck("restore", lambda stop: restic.restore(snapshot_id, target, beside_check=True,
                                                              cancellation=stop, on_start=_noted_in(scratch)))


def _noted_in(scratch: str) -> Callable[[int], None]:
    """Note each restic restoring into ``scratch`` there: restic runs in its own session, so if this process is
    killed it would go on writing a snapshot into a directory the reaper removes (and create it again)."""
    return lambda pid: note_process(scratch, pid)


def verify_files_backup(
    restic: Restic, backup: StoredBackup, vouching: BackupRecord, scratch: str, record: RecordDraft[VerifyDraft],
    repository_sound: CheckGate, ahead: BesideCheck[None] | None = None,
) -> None:
    """Restore ``backup`` under ``scratch`` and add a finding for every difference from its manifest.

    While the repository is still being checked, the snapshot is restored beside the check without a lock
    (:mod:`agents.jobs.beside_check`) -- or it already is: ``ahead``, the restore of this very snapshot into
    ``scratch``/files started before the listing (:func:`restore_ahead`). ``repository_sound`` waits for the
    check, and nothing restored is compared unless it passed (a restore beside a failed check is stopped and left
    to the scratch directory's removal). The manifest is read from its own snapshot beside them, the same way
    (:mod:`agents.jobs.manifest_read`), or, for a backup of an earlier version, from the restored tree. Raises
    :class:`CouldNotVerify` when the check, the restore or the manifest's read could not be done.
    """
    early = ahead
    manifest_read = None if backup.manifest_in_data else read_beside_check(restic, backup, vouching)
    if early is None and not repository_sound.known:
        early = _restore_beside_check(restic, backup.snapshot_id, scratch)
    try:
        if not repository_sound():
            return
        restored = _restored(restic, backup, scratch, record, early)
        if restored is None:
            return
        if manifest_read is None:
            data = _manifest_in_data(backup, vouching, restored, record)
        else:
            data = vouched_manifest(restic, backup, vouching, record, manifest_read)
    finally:
        if early is not None:
            early.drop()
        if manifest_read is not None:
            manifest_read.drop()
    if data is not None:
        _compare(backup, vouching, data, restored, record)


def _restored(restic: Restic, backup: StoredBackup, scratch: str, record: RecordDraft[VerifyDraft],
              early: BesideCheck[None] | None) -> str | None:
    """Where the snapshot was restored: beside the check, or now, with a lock, when that did not succeed; None
    (with ``repository_damaged``) when restic found stored data bad. Raises :class:`CouldNotVerify`."""
    if early is not None:
        succeeded, _ = early.result()
        record.add_phase("restore", early.seconds)
        if succeeded:
            return os.path.join(scratch, FIRST_RESTORE)
        shutil.rmtree(os.path.join(scratch, FIRST_RESTORE), ignore_errors=True)  # what it left, before restoring again
    directory = os.path.join(scratch, FIRST_RESTORE if early is None else "files-locked")
    with record.phase("restore"):
        try:
            restic.restore(backup.snapshot_id, directory, on_start=_noted_in(scratch))
        except ResticError as error:
            if note_damage(error, record):
                return None
            raise CouldNotVerify(f"restore failed: {error.describe()}") from error
        except OSError as error:  # restic missing, or its pid could not be noted in the scratch directory
            raise CouldNotVerify(f"restore failed: {error}") from error
    return directory


def _manifest_in_data(backup: StoredBackup, vouching: BackupRecord, scratch: str,
                      record: RecordDraft[VerifyDraft]) -> bytes | None:
    """The manifest file restored with the data (files backups of earlier versions), if the record vouches for
    it; None (with findings) when it does not or is not there."""
    manifest_file = os.path.join(scratch, backup.manifest_path.lstrip("/"))
    try:
        fd = os.open(manifest_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        record.add("manifest_missing", "error", f"the snapshot holds no manifest at {backup.manifest_path}")
        return None
    with os.fdopen(fd, "rb") as handle:
        if not check_manifest_size(os.fstat(handle.fileno()).st_size, vouching, record):
            return None
        data = handle.read(manifest_limit(vouching) + 1)
    if not check_manifest_digest(data, vouching, record):
        return None
    return data


def _compare(backup: StoredBackup, vouching: BackupRecord, data: bytes, scratch: str,
             record: RecordDraft[VerifyDraft]) -> None:
    """Compare every restored file under ``scratch`` with the manifest ``data`` (checked against the record)."""
    changed = set(vouching.changed_during_backup)
    ignore = {backup.manifest_path} if backup.manifest_in_data else set()
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
