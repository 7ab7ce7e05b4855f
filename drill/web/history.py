"""What the web view shows of one system over time, and of last night's jobs, from the ledger and the queue."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agents.contract.records import BackupRecord, Record, VerifyRecord
from drill.fleet.queue import QueuedJob
from drill.fleet.status import backup_bytes

Series = dict[str, list[tuple[datetime, float]]]


@dataclass
class SystemHistory:
    backups: list[BackupRecord] = field(default_factory=list)  # newest first
    verifications: list[VerifyRecord] = field(default_factory=list)  # newest first
    backup_seconds: Series = field(default_factory=dict)  # by level
    backup_megabytes: Series = field(default_factory=dict)  # by level
    verify_seconds: Series = field(default_factory=dict)  # by site
    rpo_hours: Series = field(default_factory=dict)  # time since the previous successful backup, at each
    pass_streak: int = 0  # passed verifications in a row, the newest first


def system_history(host: str, records: Iterable[Record]) -> SystemHistory:
    """The backups of ``host`` and the verifications of its backups, with the series the charts draw."""
    history = SystemHistory()
    for record in records:
        if isinstance(record, BackupRecord) and record.host == host:
            history.backups.append(record)
        elif isinstance(record, VerifyRecord) and record.backup_host == host:
            history.verifications.append(record)
    history.backups.sort(key=lambda r: r.timings.finished, reverse=True)
    history.verifications.sort(key=lambda r: r.timings.finished, reverse=True)
    previous: datetime | None = None
    for backup in reversed(history.backups):
        level = (backup.level.effective or backup.level.requested).value
        when = backup.timings.finished
        history.backup_seconds.setdefault(level, []).append((when, backup.timings.duration_seconds))
        if (size := backup_bytes(backup)) is not None:
            history.backup_megabytes.setdefault(level, []).append((when, size / 1e6))
        if backup.outcome == "success":
            if previous is not None:
                history.rpo_hours.setdefault("RPO", []).append((when, (when - previous).total_seconds() / 3600))
            previous = when
    for verified in history.verifications:
        history.verify_seconds.setdefault(verified.repository.site, []).append(
            (verified.timings.finished, verified.timings.duration_seconds))
    for verified in history.verifications:
        if verified.verdict != "passed":
            break
        history.pass_streak += 1
    return history


@dataclass(frozen=True)
class NightJob:
    job: QueuedJob
    record: Record | None  # what the job ended in, when its record is in the ledger
    host: str | None  # the host that ran it


def night_jobs(jobs: list[QueuedJob], records: Iterable[Record], hosts: dict[str, str]) -> list[NightJob]:
    """Each of ``jobs`` with the record that answers it (by the record's job request) and the host that ran it."""
    answers: dict[str, Record] = {}
    for record in records:
        request = getattr(getattr(record, "job", None), "request", None)
        if request:
            answers[str(request)] = record
    return [NightJob(job, answers.get(job.job_id), hosts.get(job.claimed_by or "")) for job in jobs]
