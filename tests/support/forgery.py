"""Making a signed backup record vouch for a snapshot the agent did not make -- to test what verification still
catches when the record itself is wrong (a capture bug, a compromised agent): every difference between the
snapshot and the manifest the record vouches for."""

from __future__ import annotations

import uuid

from agents.config.model import AgentConfig
from agents.contract.records import BackupRecord
from agents.repositories import open_outbox, open_record_store


def vouch_for(config: AgentConfig, snapshot_id: str, *, database: str | None = None,
              manifest_snapshot_id: str | None = None) -> None:
    """Sign, with the agent's own key, a copy of its first backup record (of ``database``, for a dump) naming
    ``snapshot_id`` instead (and ``manifest_snapshot_id`` as its manifest's snapshot, when given): the manifest
    digest it vouches for stays the honest one."""
    store = open_record_store(config)
    original = next(r for r in (store.read(p).record for p in store.paths(kind="backup"))
                    if isinstance(r, BackupRecord) and r.target.database == database and r.snapshot is not None)
    assert original.snapshot is not None
    forged = original.model_copy(update={
        "record_id": str(uuid.uuid4()), "job": original.job.model_copy(update={"id": str(uuid.uuid4())}),
        "snapshot": original.snapshot.model_copy(update={"id": snapshot_id, "tree": None})})
    if manifest_snapshot_id is not None:
        assert forged.manifest is not None
        forged = forged.model_copy(update={
            "manifest": forged.manifest.model_copy(update={"snapshot_id": manifest_snapshot_id})})
    open_outbox(config).write(forged)
