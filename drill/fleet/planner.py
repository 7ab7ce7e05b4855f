"""The nightly verification plan: which restores and checks to run, and why; what is overdue.

:func:`make_plan` is pure: given the fleet (agents with their inventories, scratch
hosts), what the ledger says was backed up, verified and checked, the jobs already
queued or running, the settings and the time, it returns the jobs to queue -- each
with the reason it is in the plan -- and the flags for ops:

* a **verify** job for each (system, target, site of one of its repositories) whose
  newest full backup is not verified yet and older than ``new_full_within`` allows
  to wait (``new_full``), or that has no passed verification within ``max_days``
  (``coverage``); sent to the scratch hosts of that site that read the repository;
* a **check** job per repository each night reading part *k* of
  ``read_data_nights`` (*k* = the night's number modulo N, so every pack is read
  within N nights whichever host runs it);
* flags ``coverage_overdue`` (no passed verification within ``max_days``),
  ``rpo_breach`` (no successful backup within the system's RPO), ``agent_silent``
  (no heartbeat within ``silent_after``) and ``no_scratch_host`` (a site with
  work and no scratch host that can read the repository).

:func:`run_plan` queues the plan's jobs for the window (from now until its end).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.contract.jobs import LATEST
from agents.contract.records import BackupRecord, CheckRecord, Record, VerifyRecord
from drill.config import DrillConfig, FleetSettings, FleetSystem
from drill.fleet import enrolment, queue
from drill.fleet.enrolment import AgentRow

Key = tuple[str, str]  # (host, target)


@dataclass
class LedgerFacts:
    """What the ledger says, newest per subject."""

    last_backup: dict[Key, datetime] = field(default_factory=dict)  # successful, by record time
    last_full: dict[Key, datetime] = field(default_factory=dict)
    last_verified: dict[tuple[str, str, str], datetime] = field(default_factory=dict)  # (host, target, site)
    last_check: dict[str, datetime] = field(default_factory=dict)  # by repository site+name of the checker

    def take(self, record: Record) -> None:
        if isinstance(record, BackupRecord) and record.outcome in ("success", "partial"):
            key = (record.host, record.target.name)
            when = record.timings.finished
            self.last_backup[key] = max(when, self.last_backup.get(key, when))
            if (record.level.effective or record.level.requested).value == "full":
                self.last_full[key] = max(when, self.last_full.get(key, when))
        elif isinstance(record, VerifyRecord) and record.verdict == "passed":
            subject = (record.backup_host, record.target, record.repository.site)
            when = record.timings.finished
            self.last_verified[subject] = max(when, self.last_verified.get(subject, when))
        elif isinstance(record, CheckRecord) and record.verdict == "passed":
            self.last_check[record.repository.site] = record.timings.finished


def facts_from(records: Iterable[Record]) -> LedgerFacts:
    facts = LedgerFacts()
    for record in records:
        facts.take(record)
    return facts


@dataclass(frozen=True)
class PlannedJob:
    kind: str
    reason: str
    site: str
    repository_id: str
    system: str | None = None
    host: str | None = None
    target: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "system": self.system, "host": self.host, "target": self.target,
                "site": self.site, "repository_id": self.repository_id, "reason": self.reason}


@dataclass(frozen=True)
class Flag:
    code: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "subject": self.subject, "message": self.message}


@dataclass
class Plan:
    made: datetime
    jobs: list[PlannedJob] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"made": self.made.isoformat(), "jobs": [j.to_json() for j in self.jobs],
                "flags": [f.to_json() for f in self.flags]}


def _age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    hours = (now - then).total_seconds() / 3600
    return f"{hours:.1f} hours ago" if hours < 48 else f"{hours / 24:.1f} days ago"


def make_plan(settings: FleetSettings, systems: dict[str, FleetSystem], agents: list[AgentRow], facts: LedgerFacts,
              active: list[queue.QueuedJob], now: datetime) -> Plan:
    """Tonight's plan (see the module's docstring)."""
    plan = Plan(now)
    busy = {(j.system, j.spec.get("target"), j.site) for j in active if j.kind == "verify"}
    busy_checks = {j.repository_id for j in active if j.kind == "check"}
    scratch = [a for a in agents if a.role == "scratch" and a.status == "approved"]
    by_host = {a.host: a for a in agents if a.role == "agent" and a.status != "revoked"}
    for agent in agents:
        if agent.status == "approved" and (agent.last_seen is None
                                           or now.timestamp() - agent.last_seen > settings.silent_after):
            plan.flags.append(Flag("agent_silent", agent.host, f"{agent.role} {agent.host} last heard from "
                                   f"{_age(now, _from(agent.last_seen))}"))
    max_age = timedelta(days=settings.max_days)
    checked: set[str] = set()
    for name, system in sorted(systems.items()):
        owner = by_host.get(system.host)
        if owner is None:
            plan.flags.append(Flag("agent_silent", name, f"system {name} has no enrolled agent {system.host}"))
            continue
        targets = system.targets or tuple(sorted(owner.inventory.targets))
        backups = [facts.last_backup[(system.host, t)] for t in targets if (system.host, t) in facts.last_backup]
        newest_backup = max(backups, default=None)
        if newest_backup is None or now - newest_backup > system.objectives.rpo:
            plan.flags.append(Flag("rpo_breach", name, f"newest successful backup of {name}: "
                                   f"{_age(now, newest_backup)}; its RPO is {system.objectives.rpo}"))
        for repository_name, repository in sorted(owner.inventory.repositories.items()):
            if not repository.id:
                continue
            readers = [s for s in scratch if s.site == repository.site
                       and any(r.id == repository.id for r in s.inventory.repositories.values())]
            for target in targets:
                if target not in owner.inventory.targets:
                    continue
                verified = facts.last_verified.get((system.host, target, repository.site))
                full = facts.last_full.get((system.host, target))
                if verified is None or now - verified > max_age:
                    plan.flags.append(Flag("coverage_overdue", f"{name}/{target}@{repository.site}",
                                           f"last passed verification: {_age(now, verified)}; at most every "
                                           f"{settings.max_days} days"))
                reason = None
                if full is not None and (verified is None or verified < full):
                    reason = f"the full backup of {full.isoformat(timespec='minutes')} is not verified yet"
                elif verified is None or now - verified > max_age - timedelta(days=1):
                    reason = (f"last verified {_age(now, verified)}; every target at least every "
                              f"{settings.max_days} days")
                if reason is None or (name, target, repository.site) in busy:
                    continue
                if not readers:
                    plan.flags.append(Flag("no_scratch_host", f"{name}/{target}@{repository.site}",
                                           f"no approved scratch host at site {repository.site} reads repository "
                                           f"{repository_name} of {name}"))
                    continue
                plan.jobs.append(PlannedJob(
                    "verify", reason, repository.site, repository.id, name, system.host, target,
                    {"kind": "verify", "target": target, "target_kind": owner.inventory.targets[target].kind,
                     "backup_host": system.host, "snapshot": LATEST}))
            if repository.id in checked or repository.id in busy_checks or not readers:
                continue
            checked.add(repository.id)
            nights = settings.read_data_nights
            part = math.floor(now.timestamp() / 86400) % nights + 1
            plan.jobs.append(PlannedJob(
                "check", f"reads part {part} of {nights}: every pack within {nights} nights", repository.site,
                repository.id, name, system.host, None,
                {"kind": "check", "read_data_parts": nights, "read_data_part": part}))
    return plan


def _from(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def current_plan(ledger: Any, store: Any, config: DrillConfig, now: datetime) -> Plan:
    """The plan for the fleet of ``config`` as its ledger and queue are now."""
    from drill.fleet.drills import fleet_systems  # noqa: PLC0415 -- drills imports this module's neighbours

    if config.fleet is None:
        raise ValueError("not a fleet")
    facts = facts_from(entry.record for entry in ledger.entries() if entry.kind in ("backup", "verify", "check"))
    active = [j for state in ("queued", "running") for j in queue.list_jobs(store, state=state)]
    return make_plan(config.fleet, fleet_systems(config, store), enrolment.list_agents(store), facts, active, now)


def window_end(settings: FleetSettings, now: datetime) -> datetime:
    """When tonight's window ends, seen from ``now`` (local time); now + the window's length outside it."""
    local = now.astimezone()
    start, end = settings.window
    length = (end - start) % (24 * 60)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    opened = midnight + timedelta(minutes=start)
    if opened > local:
        opened -= timedelta(days=1)
    closes = opened + timedelta(minutes=length)
    return closes if closes > local else local + timedelta(minutes=length)


def run_plan(ledger: Any, store: Any, config: DrillConfig, plan: Plan) -> list[str]:
    """Queue the jobs of ``plan`` until the window's end, each verify job with the signed backup records it is
    anchored to; their ids."""
    from drill.drills import backup_records  # noqa: PLC0415

    assert config.fleet is not None
    now = plan.made.timestamp()
    lifetime = max(600.0, window_end(config.fleet, plan.made).timestamp() - now)
    queued = []
    for job in plan.jobs:
        spec = dict(job.spec)
        if job.kind == "verify" and job.host and job.target:
            spec["backup_records"], spec["trusted_keys"] = backup_records(ledger, job.host, job.target)
            if config.scratch is not None:
                spec["scratch"] = config.scratch
        queued.append(queue.enqueue(store, spec, reason=job.reason, now=now, lifetime=lifetime, site=job.site,
                                    repository_id=job.repository_id, system=job.system,
                                    max_attempts=config.fleet.max_attempts))
    return queued


def in_window(settings: FleetSettings, now: datetime) -> str | None:
    """The night (its local date at the window's start) when ``now`` is inside the window, else None."""
    local = now.astimezone()
    start, end = settings.window
    minute = local.hour * 60 + local.minute
    length = (end - start) % (24 * 60)
    since = (minute - start) % (24 * 60)
    if since >= length:
        return None
    return (local - timedelta(minutes=since)).date().isoformat()


def claim_night(store: Any, settings: FleetSettings, now: datetime) -> str | None:
    """The night to plan now, claimed for this coordinator: None outside the window or when another coordinator (or
    an earlier round) has it. One insert wins, on PostgreSQL and SQLite alike."""
    night = in_window(settings, now)
    if night is None:
        return None
    won = store.query("INSERT INTO fleet_nights (night, planned, jobs) VALUES (%s, %s, 0) "
                      "ON CONFLICT (night) DO NOTHING RETURNING night", (night, now.timestamp()))
    return night if won else None


def note_night(store: Any, night: str, jobs: int) -> None:
    store.execute("UPDATE fleet_nights SET jobs = %s WHERE night = %s", (jobs, night))
