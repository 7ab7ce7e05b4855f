"""DR drills: restore every system in scope from one site, verify it, measure RPO and RTO, record each step.

A drill is a sequence of signed records in the ledger, all carrying its id:

* ``drill.started`` (coordinator): site, scope (systems, targets, objectives), start time;
* per system and target, the agent's ``verify`` records, then a ``drill.step``
  (coordinator) with the snapshot used, **RPO achieved** (drill start − that
  snapshot's time; none at the site: infinite), **RTO** (drill start → verified)
  against the objectives, and the verdict;
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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents import process
from agents.jobs.verify import VerifyRequest, run_verify
from agents.records import iso, utc_now
from drill.config import DrillConfig, System
from drill.coordinator import IngestResult, ingest_files
from drill.ledger.ledger import Entry, Ledger

SCHEMA = "drill.drill/v1"
Progress = Callable[[str], None]


class DrillInputError(Exception):
    """A drill request that cannot run (unknown site, system or drill); the message says what to change."""


@dataclass
class DrillView:
    """A drill as the ledger tells it."""

    drill_id: str
    started: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    finished: dict[str, Any] | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return str(self.finished["verdict"]) if self.finished else "incomplete"

    def missing(self) -> list[tuple[str, str]]:
        """(system, target) pairs in scope without a step record."""
        done = {(s["system"], s["target"]) for s in self.steps}
        return [(item["system"], target) for item in self.started["scope"] for target in item["targets"]
                if (item["system"], target) not in done]


def _new(kind: str, drill_id: str, config: DrillConfig, **fields: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "record_id": str(uuid.uuid4()), "kind": kind, "drill_id": drill_id,
            "host": config.coordinator, **fields}


def load_drill(ledger: Ledger, drill_id: str) -> DrillView:
    """Everything the ledger holds of one drill. Raises :class:`DrillInputError` for an unknown id."""
    entries = ledger.entries_of_drill(drill_id)
    started = next((e.document() for e in entries if e.kind == "drill.started"), None)
    if started is None:
        raise DrillInputError(f"no drill {drill_id!r} in the ledger (drillctl drill list shows the drills)")
    view = DrillView(drill_id, started, entries=entries)
    for entry in entries:
        document = entry.document()
        if entry.kind == "drill.step":
            view.steps.append(document)
        elif entry.kind == "verify":
            view.verifications.append(document)
        elif entry.kind == "drill.finished":
            view.finished = document
    return view


def list_drills(ledger: Ledger) -> list[DrillView]:
    ids = []
    for entry in ledger.entries():
        if entry.kind == "drill.started" and entry.drill_id:
            ids.append(entry.drill_id)
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
    scope = [{"system": name, "host": config.systems[name].agent.host,
              "targets": list(config.systems[name].targets),
              "objectives": config.systems[name].objectives.to_json()} for name in chosen]
    ledger.append_signed(_new("drill.started", drill_id, config, site=site, scope=scope, config_file=config.source,
                              started=iso(utc_now())))
    return drill_id


def run_drill(ledger: Ledger, config: DrillConfig, drill_id: str, progress: Progress) -> DrillView:
    """Run every step the drill still lacks, then finish it (unless interrupted). Returns the drill."""
    view = load_drill(ledger, drill_id)
    if view.finished is not None:
        raise DrillInputError(f"drill {drill_id} is already finished ({view.verdict})")
    started = datetime.fromisoformat(view.started["started"].replace("Z", "+00:00"))
    site = str(view.started["site"])
    for system_name, target in view.missing():
        if process.CANCELLATION.is_cancelled:
            progress("interrupted: the drill stays incomplete; 'drillctl drill resume' continues it")
            return load_drill(ledger, drill_id)
        system = config.systems.get(system_name)
        if system is None:
            raise DrillInputError(f"system {system_name!r} of drill {drill_id} is not in {config.source} any more")
        progress(f"{system_name}/{target}: restoring from {site} and verifying")
        step = _run_step(ledger, config, system, target, site, drill_id, started)
        if step is None:  # interrupted during the verification: no step record, resume redoes it
            progress("interrupted: the drill stays incomplete; 'drillctl drill resume' continues it")
            return load_drill(ledger, drill_id)
        progress(f"{system_name}/{target}: {step['verdict']}  RPO {_human(step['rpo_seconds'])}  "
                 f"RTO {_human(step['rto_seconds'])}")
    return finish_drill(ledger, config, drill_id, closing=False)


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "infinite"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _run_step(
    ledger: Ledger, config: DrillConfig, system: System, target: str, site: str, drill_id: str, started: datetime
) -> dict[str, Any] | None:
    repository = system.repository_at(site)
    objectives = system.objectives
    step = _new("drill.step", drill_id, config, system=system.name, backup_host=system.agent.host, target=target,
                site=site, repository=repository, objectives=objectives.to_json(), verifications=[],
                snapshot_time=None, rpo_seconds=None, rto_seconds=None, rpo_met=False, rto_met=False,
                compared={"files": 0, "bytes": 0, "tables": 0, "rows": 0}, findings=[], verdict="failed",
                started=iso(utc_now()))
    if repository is None:
        step["findings"].append({"code": "no_repository_at_site", "severity": "error",
                                 "message": f"{system.name} has no repository at site {site!r}"})
    else:
        records = run_verify(system.agent, VerifyRequest(repository, target, None, system.agent.host, None,
                                                         drill_id=drill_id))
        if process.CANCELLATION.is_cancelled:
            return None
        taken = IngestResult()
        ingest_files(ledger, system.agent, [r.path for r in records if r.path], taken)
        by_record = {e.record_id: e for e in taken.taken}
        documents = [r.to_document() for r in records]
        _summarise(step, documents, by_record, started, objectives.rto.total_seconds(),
                   objectives.rpo.total_seconds())
    step["finished"] = iso(utc_now())
    ledger.append_signed(step)
    return step


def _summarise(step: dict[str, Any], documents: list[dict[str, Any]], entries: dict[str, Entry], started: datetime,
               rto_objective: float, rpo_objective: float) -> None:
    times = []
    no_snapshot = False
    for document in documents:
        snapshot = document.get("snapshot") or {}
        entry = entries.get(document["record_id"])
        step["verifications"].append({
            "record_id": document["record_id"], "leaf_hash": entry.leaf_hash if entry else None,
            "database": snapshot.get("database"), "snapshot_id": snapshot.get("id"),
            "snapshot_time": snapshot.get("time"), "verdict": document["verdict"]})
        for key in step["compared"]:
            step["compared"][key] += int(document.get("compared", {}).get(key, 0))
        for finding in document["findings"]:
            if finding["severity"] == "error":
                step["findings"].append({**finding, "from": document["record_id"]})
            if finding["code"] == "no_restorable_snapshot":
                no_snapshot = True
        if snapshot.get("time"):
            times.append(datetime.fromisoformat(snapshot["time"]))
    verified = bool(documents) and all(d["verdict"] == "passed" for d in documents)
    finished = max(datetime.fromisoformat(d["timings"]["finished"].replace("Z", "+00:00")) for d in documents)
    step["rto_seconds"] = round((finished - started).total_seconds(), 3)
    if times and not no_snapshot:
        oldest = min(times)
        step["snapshot_time"] = iso(oldest)
        step["rpo_seconds"] = round((started - oldest).total_seconds(), 3)
    step["rpo_met"] = step["rpo_seconds"] is not None and step["rpo_seconds"] <= rpo_objective
    step["rto_met"] = verified and step["rto_seconds"] <= rto_objective
    if step["rpo_seconds"] is None:
        step["findings"].append({"code": "no_restorable_snapshot", "severity": "error",
                                 "message": "no restorable snapshot at this site: RPO is infinite"})
    elif not step["rpo_met"]:
        step["findings"].append({"code": "rpo_missed", "severity": "error",
                                 "message": f"RPO {_human(step['rpo_seconds'])} exceeds the objective "
                                 f"{_human(rpo_objective)}"})
    if verified and not step["rto_met"]:
        step["findings"].append({"code": "rto_missed", "severity": "error",
                                 "message": f"RTO {_human(step['rto_seconds'])} exceeds the objective "
                                 f"{_human(rto_objective)}"})
    step["verdict"] = "passed" if verified and step["rpo_met"] and step["rto_met"] else "failed"


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
    failing = sorted({f"{s['system']}/{s['target']}" for s in view.steps if s["verdict"] != "passed"})
    verdict = "incomplete" if missing else ("failed" if failing else "passed")
    listed = [{"record_id": e.record_id, "leaf_hash": e.leaf_hash, "kind": e.kind} for e in view.entries]
    started = datetime.fromisoformat(view.started["started"].replace("Z", "+00:00"))
    now = utc_now()
    ledger.append_signed(_new(
        "drill.finished", drill_id, config, verdict=verdict, failing=failing,
        not_run=[f"{s}/{t}" for s, t in missing], records=listed, finished=iso(now),
        duration_seconds=round((now - started).total_seconds(), 3)))
    return load_drill(ledger, drill_id)
