"""The coordinator's ``/metrics`` for Prometheus: what ``drillctl status`` says, as numbers.

Names follow Prometheus' conventions (``drill_`` prefix, base units, ``_seconds``,
``_timestamp_seconds``, ``_total`` only for counters). :func:`render` builds a
fresh registry from the ledger and the queue on each call; :class:`MetricsCache`
keeps the result for a short while, and the ledger audit for longer, because both
read the whole ledger. The alert rules built on these are in ``docs/alerts.yml``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from agents.contract.records import BackupRecord, DrillStep, VerifyRecord
from drill.config import DrillConfig
from drill.fleet import enrolment, queue
from drill.fleet.drills import fleet_systems
from drill.fleet.status import build_status

CONTENT_TYPE = CONTENT_TYPE_LATEST
STATUS_SECONDS = 30.0  # a scrape every 15-60 s reads the ledger at most this often
AUDIT_SECONDS = 600.0  # the full audit (every signature, the Merkle tree) at most this often


def render(ledger: Any, store: Any, config: DrillConfig, audit_ok: bool | None, now: datetime) -> bytes:
    """The exposition text of every metric, from the ledger and the queue as they are ``now``."""
    assert config.fleet is not None
    registry = CollectorRegistry()

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, text, labels, registry=registry)

    entries = ledger.entries()
    records = [e.record for e in entries if e.kind in ("backup", "verify", "check")]
    systems = fleet_systems(config, store)
    agents = enrolment.list_agents(store)
    active = [j for state in ("queued", "running") for j in queue.list_jobs(store, state=state)]
    status = build_status(config.fleet, systems, agents, records, active, now)

    backup_ok = gauge("drill_backup_last_success_timestamp_seconds",
                      "When the newest successful backup of the target at the level finished.",
                      ("system", "target", "level"))
    verified_ok = gauge("drill_verification_last_success_timestamp_seconds",
                        "When the newest passed verification of the target at the site finished.",
                        ("system", "target", "site"))
    system_of = {system.host: name for name, system in systems.items()}
    newest_backups: dict[tuple[str, str, str], float] = {}
    newest_verifications: dict[tuple[str, str, str], float] = {}
    for record in records:
        if isinstance(record, BackupRecord) and record.outcome == "success" and record.host in system_of:
            level = (record.level.effective or record.level.requested).value
            key = (system_of[record.host], record.target.name, level)
            newest_backups[key] = max(newest_backups.get(key, 0.0), record.timings.finished.timestamp())
        elif isinstance(record, VerifyRecord) and record.verdict == "passed" and record.backup_host in system_of:
            key = (system_of[record.backup_host], record.target, record.repository.site)
            newest_verifications[key] = max(newest_verifications.get(key, 0.0), record.timings.finished.timestamp())
    for key, finished in newest_backups.items():
        backup_ok.labels(*key).set(finished)
    for key, finished in newest_verifications.items():
        verified_ok.labels(*key).set(finished)

    passed = gauge("drill_verification_passed", "1 when the newest verification of the target passed, else 0.",
                   ("system", "target"))
    rpo = gauge("drill_rpo_seconds", "RPO achieved: the age of the newest successful backup of the target.",
                ("system", "target"))
    objective = gauge("drill_rpo_objective_seconds", "The RPO objective of the target's system.",
                      ("system", "target"))
    problems = gauge("drill_target_problems", "Open problems of the target, by code (backup_failed, "
                     "verification_failed, rpo_breach, coverage_overdue, no_scratch_host).",
                     ("system", "target", "code"))
    for target in status.targets:
        if target.verification is not None:
            passed.labels(target.system, target.target).set(1 if target.verification.verdict == "passed" else 0)
        if (achieved := target.rpo_seconds(now)) is not None:
            rpo.labels(target.system, target.target).set(achieved)
        objective.labels(target.system, target.target).set(target.rpo_objective_seconds)
        for code in ("backup_failed", "verification_failed", "rpo_breach", "coverage_overdue", "no_scratch_host"):
            problems.labels(target.system, target.target, code).set(
                sum(1 for p in target.problems if p.code == code))
    overdue = sum(1 for t in status.targets if any(p.code == "coverage_overdue" for p in t.problems))
    gauge("drill_coverage_ratio", "Targets with a passed verification at every site within max_days, "
          "as a fraction of all targets.").set(1 - overdue / len(status.targets) if status.targets else 1.0)

    rto = gauge("drill_drill_rto_seconds", "RTO of the system in its newest drill at the site (drill start to "
                "verified restore).", ("system", "site"))
    for entry in entries:  # in ledger order: the newest drill step of each system and site wins
        record = entry.record
        if isinstance(record, DrillStep) and record.rto_seconds is not None:
            rto.labels(record.system, record.site).set(record.rto_seconds)

    jobs = gauge("drill_jobs", "Jobs in the queue by state.", ("state",))
    counts = queue.count_jobs(store)
    for state in queue.STATES:
        jobs.labels(state).set(counts.get(state, 0))
    heartbeat = gauge("drill_agent_last_heartbeat_timestamp_seconds", "When the host last polled the coordinator.",
                      ("host", "role"))
    silent = gauge("drill_agent_silent", "1 when an approved host has not polled within silent_after, else 0.",
                   ("host", "role"))
    silent_hosts = {f.subject for f in status.flags if f.code == "agent_silent"}
    for agent in agents:
        if agent.status == "revoked":
            continue
        if agent.last_seen is not None:
            heartbeat.labels(agent.host, agent.role).set(agent.last_seen)
        silent.labels(agent.host, agent.role).set(1 if agent.host in silent_hosts else 0)
    gauge("drill_ledger_entries", "Records in the ledger.").set(len(entries))
    if audit_ok is not None:
        gauge("drill_ledger_audit_ok", "1 when the newest audit of the ledger (every entry, signature and "
              "checkpoint) found nothing, else 0.").set(1 if audit_ok else 0)
    return generate_latest(registry)


class MetricsCache:
    """The newest exposition, made again at most every :data:`STATUS_SECONDS` (the audit every
    :data:`AUDIT_SECONDS`) however often Prometheus scrapes; one scrape makes it at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.text: bytes | None = None
        self.made = 0.0
        self.audit_ok: bool | None = None
        self.audited = 0.0

    def get(self, ledger: Any, store: Any, config: DrillConfig) -> bytes:
        with self.lock:
            now = self.clock()
            if self.audit_ok is None or now - self.audited >= AUDIT_SECONDS:
                self.audit_ok = not ledger.audit()
                self.audited = now
            if self.text is None or now - self.made >= STATUS_SECONDS:
                self.text = render(ledger, store, config, self.audit_ok, datetime.now(UTC))
                self.made = now
            return self.text
