"""What the files and the database verifications share: the backup's own record and the manifest's digest."""

from __future__ import annotations

from agents.contract.documents import DocumentError
from agents.contract.errors import DrillError
from agents.contract.records import BackupRecord, ManifestCheck
from agents.contract.signing import SignatureError
from agents.jobs.catalog import StoredBackup
from agents.outbox import RecordStore
from agents.records import RecordDraft, VerifyDraft
from targets import hashing


class CouldNotVerify(DrillError):
    """The verification could not run to its end; the message says why. Never a pass."""

    code = "could_not_verify"


def backup_record(store: RecordStore, job_id: str, record: RecordDraft[VerifyDraft] | None = None
                  ) -> BackupRecord | None:
    """The backup's own record from this agent's outbox, when it is on this host and its signature holds.

    A record that cannot be trusted is not used, and ``record`` gets a ``backup_record_invalid`` finding.
    """
    try:
        return store.backup_record(job_id)
    except (SignatureError, DocumentError) as error:
        if record is not None:
            record.add("backup_record_invalid", "error", f"the backup's record of job {job_id} cannot be trusted: "
                       f"{error}")
        return None


def check_manifest_digest(data: bytes, backup: StoredBackup, store: RecordStore,
                          record: RecordDraft[VerifyDraft]) -> bool:
    """Compare the stored manifest's digest with what the backup vouched for; record both; False if they differ.

    The backup's own record (when this host has it) is the stronger witness: a
    snapshot's tag is written by whoever writes the snapshot.
    """
    own = backup_record(store, backup.job_id, record)
    vouched = own.manifest.digest if own is not None and own.manifest is not None else None
    source = "backup record" if vouched else "snapshot tag"
    expected = vouched or backup.manifest_digest
    digest = hashing.digest_bytes("sha256", data)
    record.details.manifest = ManifestCheck(digest=digest, expected=expected, checked_against=source)
    if digest != expected:
        record.add("manifest_digest_mismatch", "error",
                   f"the manifest in the repository has digest {digest}, the {source} says {expected}")
        return False
    return True
