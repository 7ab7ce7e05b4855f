"""What the files and the database verifications share: the backup's own record and the manifest's digest."""

from __future__ import annotations

import json
import os

from agents.jobs.catalog import StoredBackup
from agents.records import Outbox, ResultRecord
from agents.state import StateDir
from targets import hashing


class CouldNotVerify(Exception):
    """The verification could not run to its end; the message says why. Never a pass."""


def backup_record(state: StateDir, job_id: str) -> dict[str, object] | None:
    """The backup's own record from this agent's outbox, when it is on this host."""
    for path in Outbox(state.path).list():
        if job_id in os.path.basename(path):
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            if isinstance(document, dict):
                return document
    return None


def check_manifest_digest(data: bytes, backup: StoredBackup, state: StateDir, record: ResultRecord) -> bool:
    """Compare the stored manifest's digest with what the backup vouched for; record both; False if they differ.

    The backup's own record (when this host has it) is the stronger witness: a
    snapshot's tag is written by whoever writes the snapshot.
    """
    own = backup_record(state, backup.job_id) or {}
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
