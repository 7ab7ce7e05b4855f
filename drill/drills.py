"""DR drills: restore every system in scope from one site, verify it, measure RPO and RTO, record each step.

A drill is a sequence of signed records in the ledger, all carrying its id:

* ``drill.started`` (coordinator): site, scope (systems, targets, objectives), start time;
* per system and target, the agent's ``verify`` records (a ``drill.job/v1`` sent
  to the agent through its one entry point), then a ``drill.step``
  (coordinator) computed from those records *as the ledger holds them*: the
  snapshot used, **RPO achieved** (drill start − that snapshot's time; none at
  the site: infinite), **RTO** (drill start → verified) against the
  objectives, and the verdict. A verification whose record is not in the
  ledger counts as not verified;
* ``drill.finished`` (coordinator): the verdict and the id and leaf hash of every
  record of the drill, so that a bundle missing one of them is caught.

A drill passes only if every step verified and met its objectives. An
interrupted drill has no ``drill.finished``: it is **incomplete** until
``resume`` runs the steps it lacks, or ``close`` ends it as incomplete -- never
as passed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents import api
from agents.contract.documents import utc_now
from agents.contract.errors import InputError
from agents.contract.jobs import LATEST, VerifyJob
from agents.contract.records import (
    AgentRecord,
    BackupRecord,
    DrillFinished,
    DrillStarted,
    DrillStep,
    JobRef,
    ListedRecord,
    Record,
    ScopeItem,
    SignedRecord,
    StepCompared,
    StepFinding,
    StepVerification,
    VerifyRecord,
)
from agents.contract.records import (
    Objectives as ObjectiveSeconds,
)
from drill.config import DrillConfig, System
from drill.coordinator import ingest_signed
from drill.ledger.ledger import Entry, Ledger

Progress = Callable[[str], None]


class DrillInputError(InputError):
    """A drill request that cannot run (unknown site, system or drill); the message says what to change."""

    code = "bad_drill_request"


@dataclass
class DrillView:
    """A drill as the ledger tells it."""

    drill_id: str
    started: DrillStarted
    steps: list[DrillStep] = field(default_factory=list)
    finished: DrillFinished | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.finished.verdict if self.finished else "incomplete"

    def missing(self) -> list[tuple[str, str]]:
        """(system, target) pairs in scope without a step record."""
        done = {(s.system, s.target) for s in self.steps}
        return [(item.system, target) for item in self.started.scope for target in item.targets
                if (item.system, target) not in done]


def _head(kind: str, drill_id: str, config: DrillConfig) -> dict[str, object]:
    return {"record_id": str(uuid.uuid4()), "job": JobRef(id=drill_id, kind=kind), "drill_id": drill_id,
            "host": config.coordinator}


def load_drill(ledger: Ledger, drill_id: str) -> DrillView:
    """Everything the ledger holds of one drill. Raises :class:`DrillInputError` for an unknown id."""
    entries = ledger.entries_of_drill(drill_id)
    records = [(entry, entry.record) for entry in entries]
    started = next((r for _, r in records if isinstance(r, DrillStarted)), None)
    if started is None:
        raise DrillInputError(f"no drill {drill_id!r} in the ledger (drillctl drill list shows the drills)")
    view = DrillView(drill_id, started, entries=entries)
    for _, record in records:
        if isinstance(record, DrillStep):
            view.steps.append(record)
        elif isinstance(record, DrillFinished):
            view.finished = record
    return view


def list_drills(ledger: Ledger) -> list[DrillView]:
    ids = [entry.drill_id for entry in ledger.entries() if entry.kind == "drill.started" and entry.drill_id]
    return [load_drill(ledger, drill_id) for drill_id in ids]


def start_drill(ledger: Ledger, config: DrillConfig, site: str, systems: Sequence[str] | None) -> str:
    """Check the request and record ``drill.started``; return the drill id."""
    if site not in config.sites:
        raise DrillInputError(f"unknown site {site!r}; the agents' repositories are at: "
                              f"{', '.join(sorted(config.sites))}")
    chosen = list(systems) if systems else sorted(config.systems)
    unknown = [name for name in chosen if name not in config.systems]
    if unknown:
        raise DrillInputError(f"unknown system {', '.join(map(repr, unknown))}; the drill config defines: "
                              f"{', '.join(sorted(config.systems))}")
    drill_id = str(uuid.uuid4())
    scope = [ScopeItem(system=name, host=config.systems[name].inventory.host,
                       targets=list(config.systems[name].targets),
                       objectives=config.systems[name].objectives.to_record()) for name in chosen]
    ledger.append_signed(DrillStarted.model_validate({
        **_head("drill.started", drill_id, config), "site": site, "scope": scope, "config_file": config.source,
        "started": utc_now()}))
    return drill_id


# Most steps a drill runs at once (``--parallel``): each holds a scratch directory or throwaway instance.
MAX_PARALLEL = 16


def run_drill(ledger: Ledger, config: DrillConfig, drill_id: str, progress: Progress, *,
              parallel: int = 1) -> DrillView:
    """Run every step the drill still lacks, ``parallel`` at a time, then finish it (unless interrupted).
    Returns the drill.

    Only the agents' work runs in parallel (one thread each: restic and the
    instances are other processes); the ledger is read and written by the
    caller's thread alone, a step's records taken as soon as its verification ends.
    Raises :class:`DrillInputError` for a finished drill, a system no longer
    in the config or ``parallel`` outside 1..:data:`MAX_PARALLEL`; what a step
    raised unexpectedly, once no new step is started and the running ones are recorded.
    """
    if not 1 <= parallel <= MAX_PARALLEL:
        raise DrillInputError(f"parallel must be between 1 and {MAX_PARALLEL} steps at once, not {parallel}")
    view = load_drill(ledger, drill_id)
    if view.finished is not None:
        raise DrillInputError(f"drill {drill_id} is already finished ({view.verdict})")
    waiting = []
    for system_name, target in view.missing():
        system = config.systems.get(system_name)
        if system is None:
            raise DrillInputError(f"system {system_name!r} of drill {drill_id} is not in {config.source} any more")
        waiting.append((system, target))
    waiting.reverse()  # popped from the end: scope order
    started, site = view.started.started, view.started.site
    interrupted = False
    failure: Exception | None = None  # raised once the steps already running are recorded
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="drill-step") as pool:
        running: dict[Future[list[SignedRecord]], _Step] = {}
        while waiting or running:
            while failure is None and waiting and len(running) < parallel and not api.cancelled():
                system, target = waiting.pop()
                progress(f"{system.name}/{target}: restoring from {site} and verifying")
                step = _Step(system, target, site, utc_now())
                try:
                    job = _verify_job(ledger, config, step, drill_id)
                except Exception as error:  # re-raised below, once the running steps are recorded
                    failure = error
                    break
                running[pool.submit(system.agent.execute, job) if job else _no_work()] = step
            if not running:
                break  # cancelled or failed before anything else started
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                step = running.pop(future)
                try:
                    signed = future.result()
                    if api.cancelled():  # interrupted during the verification: no step record, resume redoes it
                        interrupted = True
                        continue
                    recorded = _record_step(ledger, config, step, signed, drill_id, started)
                except Exception as error:  # the other running steps are still recorded first
                    failure = failure or error
                    continue
                progress(f"{step.system.name}/{step.target}: {recorded.verdict}  RPO {_human(recorded.rpo_seconds)}  "
                         f"RTO {_human(recorded.rto_seconds)}")
    if failure is not None:
        raise failure
    if interrupted or api.cancelled():
        progress("interrupted: the drill stays incomplete; 'drillctl drill resume' continues it")
        return load_drill(ledger, drill_id)
    return finish_drill(ledger, config, drill_id, closing=False)


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "infinite"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@dataclass(frozen=True)
class _Step:
    """One (system, target) of a drill on its way: where it restores from and when it began."""

    system: System
    target: str
    site: str
    started: datetime

    @property
    def repository(self) -> str | None:
        return self.system.repository_at(self.site)


def _no_work() -> Future[list[SignedRecord]]:
    """A finished future with no records: a step that sends no job (its findings say why)."""
    future: Future[list[SignedRecord]] = Future()
    future.set_result([])
    return future


def _verify_job(ledger: Ledger, config: DrillConfig, step: _Step, drill_id: str) -> VerifyJob | None:
    """The verify job of a step, with the backup records it relies on; None when the system has no repository at
    the drill's site."""
    if step.repository is None:
        return None
    system, target = step.system, step.target
    records, keys = backup_records(ledger, system.inventory.host, target)
    return VerifyJob(repository=step.repository, target=target, target_kind=system.inventory.targets[target].kind,
                     snapshot=LATEST, backup_host=system.inventory.host, scratch=config.scratch, drill_id=drill_id,
                     requested_by=config.coordinator, backup_records=records, trusted_keys=keys)


def _record_step(ledger: Ledger, config: DrillConfig, step: _Step, signed: list[SignedRecord], drill_id: str,
                 started: datetime) -> DrillStep:
    """Take a step's records into the ledger and record the step computed from the ledger's copy."""
    system = step.system
    ledgered: list[tuple[Entry, Record]] = []
    findings: list[StepFinding] = []
    if step.repository is None:
        findings.append(StepFinding(code="no_repository_at_site", severity="error",
                                    message=f"{system.name} has no repository at site {step.site!r}"))
    else:
        taken = ingest_signed(ledger, system.agent, signed)
        refusals = {path: reason for path, _, reason in taken.refused}
        for sent in signed:
            entry = taken.entry_of(sent.record.record_id)
            if entry is None:
                findings.append(StepFinding(
                    code="record_not_in_ledger", severity="error", from_=sent.record.record_id,
                    message=f"the ledger did not take the verification's record: {refusals.get(sent.path or '', '')}"))
                continue
            ledgered.append((entry, entry.record))
    objectives = system.objectives.to_record()
    ledger.append_signed(DrillStep.model_validate({
        **_head("drill.step", drill_id, config), "system": system.name, "backup_host": system.inventory.host,
        "target": step.target, "site": step.site, "repository": step.repository, "objectives": objectives,
        **summarise_step(ledgered, findings, started, objectives), "started": step.started, "finished": utc_now()}))
    return load_drill(ledger, drill_id).steps[-1]


# How many of a target's newest backup records a verify job brings (the newest recorded backup is among them).
BACKUP_RECORDS_PER_JOB = 200


def backup_records(ledger: Ledger, host: str, target: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The signed backup records of ``host``'s ``target`` in the ledger (newest last) and the keys that signed
    them: what a verify job brings, so that an agent without them (a scratch host) can tell recorded snapshots."""
    found: list[Entry] = []
    for entry in ledger.entries():
        if entry.kind == "backup" and entry.host == host:
            record = entry.record
            if isinstance(record, BackupRecord) and record.target.name == target:
                found.append(entry)
    found = found[-BACKUP_RECORDS_PER_JOB:]
    keys = {k.keyid: k.public_pem for k in ledger.keys().values() if k.role == "agent" and k.owner == host}
    return [e.envelope for e in found], keys


def summarise_step(ledgered: Sequence[tuple[Entry, Record]], findings: list[StepFinding], started: datetime,
                   objectives: ObjectiveSeconds) -> dict[str, Any]:
    """The figures of a step, from the records as the ledger holds them (never from a copy the agent returned).

    A step passes only when every record is a passed verification in the
    ledger, with RPO and RTO within the objectives.
    """
    verifications = []
    compared = StepCompared()
    snapshot_times = []
    finished_times = []
    no_snapshot = False
    for entry, record in ledgered:
        if not isinstance(record, AgentRecord):
            continue
        finished_times.append(record.timings.finished)
        for finding in record.findings:
            if finding.severity == "error":
                findings.append(StepFinding(**finding.model_dump(), from_=record.record_id))
            no_snapshot = no_snapshot or finding.code == "no_restorable_snapshot"
        if not isinstance(record, VerifyRecord):
            continue
        snapshot = record.snapshot
        verifications.append(StepVerification(
            record_id=record.record_id, leaf_hash=entry.leaf_hash, database=snapshot.database if snapshot else None,
            snapshot_id=snapshot.id if snapshot else None, snapshot_time=snapshot.time if snapshot else None,
            verdict=record.verdict))
        compared = StepCompared(files=compared.files + record.compared.files,
                                bytes=compared.bytes + record.compared.bytes,
                                tables=compared.tables + (record.compared.tables or 0),
                                rows=compared.rows + (record.compared.rows or 0))
        if snapshot is not None:
            snapshot_times.append(snapshot.time)
    verified = (bool(verifications) and len(verifications) == len(ledgered)
                and all(v.verdict == "passed" for v in verifications)
                and not any(f.code == "record_not_in_ledger" for f in findings))
    rto = round((max(finished_times) - started).total_seconds(), 3) if finished_times else None
    oldest = min(snapshot_times) if snapshot_times and not no_snapshot else None
    rpo = round((started - oldest).total_seconds(), 3) if oldest is not None else None
    rpo_met = rpo is not None and rpo <= objectives.rpo_seconds
    rto_met = verified and rto is not None and rto <= objectives.rto_seconds
    if rpo is None:
        findings.append(StepFinding(code="no_restorable_snapshot", severity="error",
                                    message="no restorable snapshot at this site: RPO is infinite"))
    elif not rpo_met:
        findings.append(StepFinding(code="rpo_missed", severity="error", message=(
            f"RPO {_human(rpo)} exceeds the objective {_human(objectives.rpo_seconds)}")))
    if verified and not rto_met:
        findings.append(StepFinding(code="rto_missed", severity="error", message=(
            f"RTO {_human(rto)} exceeds the objective {_human(objectives.rto_seconds)}")))
    return {"verifications": verifications, "compared": compared, "findings": findings, "snapshot_time": oldest,
            "rpo_seconds": rpo, "rto_seconds": rto, "rpo_met": rpo_met, "rto_met": rto_met,
            "verdict": "passed" if verified and rpo_met and rto_met else "failed"}


def finish_drill(ledger: Ledger, config: DrillConfig, drill_id: str, *, closing: bool) -> DrillView:
    """Record ``drill.finished``: passed/failed when every step ran; incomplete when ``closing`` a drill that did not.

    Raises :class:`DrillInputError` when the drill is already finished, or when
    steps are missing and ``closing`` is false.
    """
    view = load_drill(ledger, drill_id)
    if view.finished is not None:
        raise DrillInputError(f"drill {drill_id} is already finished ({view.verdict})")
    missing = view.missing()
    if missing and not closing:
        raise DrillInputError(f"drill {drill_id} lacks {len(missing)} step(s); resume it or close it")
    failing = sorted({f"{s.system}/{s.target}" for s in view.steps if s.verdict != "passed"})
    verdict = "incomplete" if missing else ("failed" if failing else "passed")
    listed = [ListedRecord(record_id=e.record_id, leaf_hash=e.leaf_hash, kind=e.kind) for e in view.entries]
    now = utc_now()
    ledger.append_signed(DrillFinished.model_validate({
        **_head("drill.finished", drill_id, config), "verdict": verdict, "failing": failing,
        "not_run": [f"{s}/{t}" for s, t in missing], "records": listed, "finished": now,
        "duration_seconds": round((now - view.started.started).total_seconds(), 3)}))
    return load_drill(ledger, drill_id)
