"""What the files and the database verifications share: the backup's own record and the manifest's digest."""

from __future__ import annotations

import os
from typing import Any

from agents.jobs.catalog import StoredBackup
from agents.records import Outbox, ResultRecord
from agents.signing import SignatureError
from agents.state import StateDir
from targets import hashing


class CouldNotVerify(Exception):
    """The verification could not run to its end; the message says why. Never a pass."""


def backup_record(state: StateDir, job_id: str, record: ResultRecord | None = None) -> dict[str, Any] | None:
    """The backup's own record from this agent's outbox, when it is on this host and its signature holds.

    A record whose signature does not verify is not used, and ``record`` gets a finding.
    """
    outbox = Outbox(state.path)
    path = outbox.find_job(job_id)
    if path is None:
        return None
    try:
        return outbox.read_verified(path)
    except (OSError, ValueError, SignatureError) as error:
        if record is not None:
            record.add("backup_record_invalid", "error",
                       f"the backup's record {os.path.basename(path)} cannot be trusted: {error}")
        return None


def check_manifest_digest(data: bytes, backup: StoredBackup, state: StateDir, record: ResultRecord) -> bool:
    """Compare the stored manifest's digest with what the backup vouched for; record both; False if they differ.

    The backup's own record (when this host has it) is the stronger witness: a
    snapshot's tag is written by whoever writes the snapshot.
    """
    own = backup_record(state, backup.job_id, record) or {}
    vouched = own.get("manifest")
    expected = vouched.get("digest") if isinstance(vouched, dict) else None
    source = "backup record" if expected else "snapshot tag"
    expected = str(expected or backup.manifest_digest)
    digest = hashing.digest_bytes("sha256", data)
    record.details["manifest"] = {"digest": digest, "expected": expected, "checked_against": source}
    if digest != expected:
        record.add("manifest_digest_mismatch", "error",
                   f"the manifest in the repository has digest {digest}, the {source} says {expected}")
        return False
    return True
