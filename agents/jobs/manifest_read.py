"""Reading a backup's manifest from its own snapshot, beside the repository's check.

A manifest is one file of its own snapshot (``agents/jobs/catalog.py``). A verification reads it without a
lock while the check runs (:mod:`agents.jobs.beside_check`) and uses it only once the check passed; what
the read gives is checked against the signed record's size and digest before anything else looks at it.
"""

from __future__ import annotations

from agents.contract.records import BackupRecord
from agents.jobs.beside_check import BesideCheck
from agents.jobs.catalog import StoredBackup
from agents.jobs.verify_common import (
    CouldNotVerify,
    check_manifest_digest,
    check_manifest_size,
    manifest_limit,
    note_damage,
)
from agents.records import RecordDraft, VerifyDraft
from agents.restic.runner import DumpTooLarge, Restic, ResticError


def read_beside_check(restic: Restic, backup: StoredBackup, vouching: BackupRecord) -> BesideCheck[bytes]:
    """Start reading ``backup``'s manifest snapshot's file without a lock, at once, in a thread. A manifest larger
    than the record vouched for is refused from this read: its size is the content's, however it is read."""
    manifest_snapshot = backup.manifest_snapshot_id
    assert manifest_snapshot is not None
    limit = manifest_limit(vouching)
    return BesideCheck("manifest read", lambda stop: restic.dump(
        manifest_snapshot, backup.manifest_path, limit=limit, beside_check=True, cancellation=stop),
        final=(DumpTooLarge,))


def vouched_manifest(
    restic: Restic, backup: StoredBackup, vouching: BackupRecord, record: RecordDraft[VerifyDraft],
    early: BesideCheck[bytes],
) -> bytes | None:
    """The manifest's bytes, read beside the check (``early``) or, when that read failed, again with a lock; None
    (with findings) when they are not what ``vouching`` vouched for, or restic found them damaged. Call only once
    the check passed. Raises :class:`CouldNotVerify` when the manifest could not be read."""
    assert backup.manifest_snapshot_id is not None
    try:
        read, data = early.result()
        if not read or data is None:
            data = restic.dump(backup.manifest_snapshot_id, backup.manifest_path, limit=manifest_limit(vouching))
    except DumpTooLarge as too_large:
        check_manifest_size(too_large.size, vouching, record)
        return None
    except ResticError as error:
        if note_damage(error, record):
            return None
        raise CouldNotVerify(f"the manifest could not be read: {error.describe()}") from error
    if not check_manifest_digest(data, vouching, record):
        return None
    return data
