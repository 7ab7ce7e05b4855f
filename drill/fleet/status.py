"""Where every system of the fleet stands: what ``drillctl status`` prints every morning.

For each system and each of its targets: the newest backup (level, age, outcome,
size), the newest verification (age, verdict, site, scratch host), the RPO
achieved against the system's objective, and what is open -- a failed or partial
newest backup (``backup_failed``), a newest verification that did not pass
(``verification_failed``), an RPO breached (``rpo_breach``), and the plan's flags
for the target (``coverage_overdue``, ``no_scratch_host``). Flags that belong to
no target (``agent_silent`` of a host) are the fleet's. :func:`build_status` is
pure; :func:`fleet_status` reads the ledger and the queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.contract.records import BackupRecord, DumpManifestInfo, FilesManifestInfo, Record, VerifyRecord
from drill.config import DrillConfig, FleetSettings, FleetSystem
from drill.fleet import enrolment, queue
from drill.fleet.enrolment import AgentRow
from drill.fleet.planner import Flag, facts_from, make_plan

TARGET_FLAGS = ("coverage_overdue", "no_scratch_host")


@dataclass(frozen=True)
class LastBackup:
    level: str
    finished: datetime
    outcome: str
    bytes: int | None
    record_id: str


@dataclass(frozen=True)
class LastVerification:
    finished: datetime
    verdict: str
    site: str
    scratch_host: str
    record_id: str


@dataclass
class TargetStatus:
    """One target of one system; ``problems`` empty means all is well with it."""

    system: str
    host: str
    target: str
    rpo_objective_seconds: float
    backup: LastBackup | None = None
    last_success: datetime | None = None
    verification: LastVerification | None = None
    problems: list[Flag] = field(default_factory=list)

    def rpo_seconds(self, now: datetime) -> float | None:
        """The RPO achieved now: the age of the newest successful backup (None: there is none)."""
        return None if self.last_success is None else (now - self.last_success).total_seconds()

    def to_json(self, now: datetime) -> dict[str, Any]:
        backup = self.backup
        verification = self.verification
        return {
            "system": self.system, "host": self.host, "target": self.target, "ok": not self.problems,
            "backup": None if backup is None else {
                "level": backup.level, "finished": backup.finished.isoformat(), "outcome": backup.outcome,
                "age_seconds": round((now - backup.finished).total_seconds()), "bytes": backup.bytes,
                "record_id": backup.record_id},
            "verification": None if verification is None else {
                "finished": verification.finished.isoformat(), "verdict": verification.verdict,
                "age_seconds": round((now - verification.finished).total_seconds()), "site": verification.site,
                "scratch_host": verification.scratch_host, "record_id": verification.record_id},
            "rpo_seconds": None if (rpo := self.rpo_seconds(now)) is None else round(rpo),
            "rpo_objective_seconds": round(self.rpo_objective_seconds),
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class Status:
    made: datetime
    targets: list[TargetStatus] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)  # the fleet's: hosts not heard from, systems without an agent

    @property
    def healthy(self) -> bool:
        return not self.flags and all(not t.problems for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {"made": self.made.isoformat(), "healthy": self.healthy,
                "targets": [t.to_json(self.made) for t in self.targets], "flags": [f.to_json() for f in self.flags]}


def backup_bytes(record: BackupRecord) -> int | None:
    """The bytes a backup holds, from its manifest (None: it has none)."""
    manifest = record.manifest
    if isinstance(manifest, FilesManifestInfo):
        return manifest.bytes
    if isinstance(manifest, DumpManifestInfo):
        return manifest.dump_bytes
    return None


def build_status(settings: FleetSettings, systems: dict[str, FleetSystem], agents: list[AgentRow],
                 records: Iterable[Record], active: list[queue.QueuedJob], now: datetime) -> Status:
    """The status of ``systems`` from the ledger's backup and verify ``records`` (see the module docstring)."""
    records = list(records)
    facts = facts_from(records)
    plan = make_plan(settings, systems, agents, facts, active, now)
    backups: dict[tuple[str, str], BackupRecord] = {}
    verifications: dict[tuple[str, str], VerifyRecord] = {}
    for record in records:
        if isinstance(record, BackupRecord):
            key = (record.host, record.target.name)
            if key not in backups or backups[key].timings.finished <= record.timings.finished:
                backups[key] = record
        elif isinstance(record, VerifyRecord):
            key = (record.backup_host, record.target)
            if key not in verifications or verifications[key].timings.finished <= record.timings.finished:
                verifications[key] = record
    by_host = {a.host: a for a in agents if a.role == "agent" and a.status != "revoked"}
    status = Status(now)
    placed: set[Flag] = set()
    for name, system in sorted(systems.items()):
        owner = by_host.get(system.host)
        targets = system.targets or (tuple(sorted(owner.inventory.targets)) if owner else ())
        for target in targets:
            entry = TargetStatus(name, system.host, target, system.objectives.rpo.total_seconds(),
                                 last_success=facts.last_backup.get((system.host, target)))
            if (backup := backups.get((system.host, target))) is not None:
                entry.backup = LastBackup((backup.level.effective or backup.level.requested).value,
                                          backup.timings.finished, backup.outcome, backup_bytes(backup),
                                          backup.record_id)
                if backup.outcome != "success":
                    errors = "; ".join(f.message for f in backup.findings if f.severity == "error")[:300]
                    entry.problems.append(Flag("backup_failed", f"{name}/{target}",
                                               f"newest backup: {backup.outcome}" + (f": {errors}" if errors else "")))
            if (verified := verifications.get((system.host, target))) is not None:
                entry.verification = LastVerification(verified.timings.finished, verified.verdict,
                                                      verified.repository.site, verified.host, verified.record_id)
                if verified.verdict != "passed":
                    codes = sorted({f.code for f in verified.findings if f.severity == "error"})
                    entry.problems.append(Flag("verification_failed", f"{name}/{target}",
                                               f"newest verification: {verified.verdict}"
                                               + (f" ({', '.join(codes)})" if codes else "")))
            rpo = entry.rpo_seconds(now)
            if rpo is None or rpo > entry.rpo_objective_seconds:
                achieved = "no successful backup" if rpo is None else f"newest successful backup {rpo / 3600:.1f} h ago"
                entry.problems.append(Flag("rpo_breach", f"{name}/{target}",
                                           f"{achieved}; the RPO objective is {system.objectives.rpo}"))
            for flag in plan.flags:
                if flag.code in TARGET_FLAGS and flag.subject.startswith(f"{name}/{target}@"):
                    entry.problems.append(flag)
                    placed.add(flag)
            status.targets.append(entry)
        for flag in plan.flags:
            if flag.code == "rpo_breach" and flag.subject == name:
                placed.add(flag)  # said per target above
    status.flags = [f for f in plan.flags if f not in placed]
    return status


def fleet_status(ledger: Any, store: Any, config: DrillConfig, now: datetime) -> Status:
    """The status of the fleet of ``config`` as its ledger and queue are now. Raises ``ValueError`` for a config
    that serves no fleet."""
    from drill.fleet.drills import fleet_systems  # noqa: PLC0415 -- drills imports this module's neighbours

    if config.fleet is None:
        raise ValueError("not a fleet")
    records = [entry.record for entry in ledger.entries() if entry.kind in ("backup", "verify", "check")]
    active = [j for state in ("queued", "running") for j in queue.list_jobs(store, state=state)]
    return build_status(config.fleet, fleet_systems(config, store), enrolment.list_agents(store), records, active,
                        now)
