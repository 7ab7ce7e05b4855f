"""Running jobs in a test the way every caller does: a ``drill.job/v1`` through the agent's one entry point."""

from __future__ import annotations

from typing import Any

from agents.config.model import AgentConfig
from agents.contract.documents import to_json_document
from agents.contract.jobs import LATEST, BackupJob, VerifyJob
from agents.contract.records import AgentRecord, BackupRecord, VerifyRecord
from agents.execute import execute
from policies.levels import Level


def backup(config: AgentConfig, policy: str = "nightly", level: Level | None = None, **job: Any) -> list[BackupRecord]:
    """Back up ``policy`` now; its typed records (one per target, per database of a database target)."""
    records = [signed.record for signed in execute(config, BackupJob(policy=policy, level=level, **job))]
    assert all(isinstance(r, BackupRecord) for r in records), records
    return records  # type: ignore[return-value]


def verify(config: AgentConfig, target: str, snapshot: str = LATEST, repository: str = "local",
           **job: Any) -> list[VerifyRecord]:
    """Verify ``target``'s backups now; the typed records."""
    records = [signed.record for signed in execute(
        config, VerifyJob(repository=repository, target=target, snapshot=snapshot, **job))]
    assert all(isinstance(r, VerifyRecord) for r in records), records
    return records  # type: ignore[return-value]


def doc(record: AgentRecord) -> dict[str, Any]:
    """The record as JSON, as it is signed."""
    return to_json_document(record)


def codes(record: AgentRecord) -> set[str]:
    return {f.code for f in record.findings}
