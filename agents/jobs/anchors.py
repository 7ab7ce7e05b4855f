"""Which snapshots count: those a signed backup record names.

The repository is not a witness for itself: anyone with its password can write
a snapshot with any tags, a manifest that matches altered content, and the
digest tag to go with it. A snapshot is therefore verified only when a backup
record signed by a trusted key names it -- the agent's own records (from its
outbox, checked with its own key), or records the job brought from the ledger
(checked with the keys the job names). The record, not the snapshot's tags,
then says which manifest digest to expect.

A copy at the other site (``restic copy``) has its own id; it counts when its
``original`` is a recorded snapshot, and its tree -- when the record knows it --
is the recorded one. A forged snapshot claiming such an original still has to
hold the manifest the record vouches for, and its data is compared with that
manifest, so claiming a false origin gains nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing
from agents.contract.documents import DocumentError
from agents.contract.records import BackupRecord, SignedRecord
from agents.jobs.catalog import StoredBackup
from agents.outbox import RecordStore

log = logging.getLogger(__name__)


def _ids(snapshot_id: str | None, original: str | None) -> set[str]:
    return {i for i in (snapshot_id, original) if i}


@dataclass(frozen=True)
class Anchors:
    """The successful backup records that can vouch for snapshots, by the snapshot id each names."""

    records: Mapping[str, BackupRecord]

    def record_for(self, backup: StoredBackup) -> BackupRecord | None:
        """The record that names ``backup`` (or the snapshot it was copied from), or None: unrecorded."""
        for snapshot_id in (backup.snapshot_id, backup.original):
            record = self.records.get(snapshot_id or "")
            if record is not None and _names(record, backup):
                return record
        return None

    def newest_files_snapshot(self, host: str, target: str, repository: str) -> str | None:
        """The id in ``repository`` of the newest recorded backup of files target ``target`` of ``host``: the
        snapshot's own id when it was taken there, its copy's when the record says it was copied there; None when
        no record says. A guess made before the repository is listed: only the listing decides what is verified."""
        newest: BackupRecord | None = None
        for record in self.records.values():
            if (record.host != host or record.target.name != target or record.target.database is not None
                    or _id_in(record, repository) is None):
                continue
            if newest is None or _time(record) > _time(newest):
                newest = record
        return None if newest is None else _id_in(newest, repository)


def _time(record: BackupRecord) -> datetime:
    assert record.snapshot is not None  # anchors all name a snapshot (``_usable``)
    return record.snapshot.time


def _id_in(record: BackupRecord, repository: str) -> str | None:
    """The id ``record``'s snapshot has in ``repository``, as far as the record knows."""
    if record.snapshot is None:
        return None
    if record.repository.name == repository:
        return record.snapshot.id
    for replication in record.replication:
        if replication.repository == repository:
            for copied in replication.copied:
                if copied.source_snapshot_id == record.snapshot.id and copied.copy_snapshot_id:
                    return copied.copy_snapshot_id
    return None


def _names(record: BackupRecord, backup: StoredBackup) -> bool:
    snapshot = record.snapshot
    if snapshot is None or record.host != backup.host or record.target.name != backup.target:
        return False
    if record.target.database != backup.database:
        return False
    if snapshot.tree and backup.tree and snapshot.tree != backup.tree:
        return False  # claims to be a copy of the recorded snapshot, but holds another tree
    manifest = record.manifest
    if manifest is not None and manifest.snapshot_id is not None:  # a dump's, or a files backup's since pairs
        return manifest.snapshot_id in _ids(backup.manifest_snapshot_id, backup.manifest_original)
    return backup.manifest_snapshot_id is None  # an earlier files backup: its manifest inside the data's snapshot


def _usable(record: object) -> BackupRecord | None:
    if isinstance(record, BackupRecord) and record.outcome in ("success", "partial") and record.snapshot:
        return record
    return None


def collect_anchors(store: RecordStore, brought: Iterable[object] = (),
                    keys: Mapping[str, Ed25519PublicKey] | None = None) -> tuple[Anchors, list[str]]:
    """The records that can vouch for snapshots: this agent's own, and ``brought`` (envelopes from the ledger)
    checked with ``keys``. Returns them and the problems found (an envelope that does not verify is not used)."""
    found: dict[str, BackupRecord] = {}
    problems: list[str] = []
    for path in store.paths(kind="backup"):
        try:
            record = _usable(store.read(path).record)
        except (OSError, signing.SignatureError, DocumentError) as error:
            problems.append(f"{path}: {error}")
            continue
        if record is not None and record.snapshot is not None:
            found[record.snapshot.id] = record
    for envelope in brought:
        try:
            record = _usable(SignedRecord.open(envelope, keys or {}).record)
        except (signing.SignatureError, DocumentError) as error:
            problems.append(f"a backup record brought with the job: {error}")
            continue
        if record is not None and record.snapshot is not None:
            found.setdefault(record.snapshot.id, record)
    return Anchors(found), problems
