"""Drills across the fleet: every system in scope restored at once on the scratch hosts of one site.

:func:`start_fleet_drill` records ``drill.started`` and queues one verify job per
system and target for the scratch hosts at the site that can read the system's
repository there (by restic repository id), each with the signed backup records
from the ledger it must be anchored to. Scratch hosts take them in parallel, up
to their capacity. :func:`advance_fleet_drill` -- run by ``drillctl serve``'s
housekeeping and by ``drillctl drill run`` while it waits, any number of times,
from any coordinator process -- records the step of every job that ended, from
its records as the ledger holds them, and the drill's end once every step is
there. Everything it needs is in the database, so a coordinator restarted
mid-drill simply goes on. A system without a repository or a scratch host at
the site, or whose job no host took within ``claim_timeout``, fails its step
with a named finding.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from agents.contract.documents import utc_now
from agents.contract.jobs import LATEST
from agents.contract.records import DrillStarted, DrillStep, ScopeItem, StepFinding, VerifyRecord
from drill.config import DrillConfig, FleetSettings, FleetSystem
from drill.drills import DrillInputError, DrillView, backup_records, finish_drill, load_drill, summarise_step
from drill.fleet import enrolment, queue
from drill.ledger.ledger import Ledger
from drill.ledger.store import Store


def fleet_systems(config: DrillConfig, store: Store) -> dict[str, FleetSystem]:
    """The systems of the fleet: those the config names by host, else every approved agent (named by host)."""
    if config.fleet_systems:
        return dict(config.fleet_systems)
    return {row.host: FleetSystem(row.host, row.host, None, config.default_objectives)
            for row in enrolment.list_agents(store) if row.role == "agent" and row.status == "approved"}


def _agent_of(store: Store, host: str) -> enrolment.AgentRow | None:
    return enrolment.agent_by_host(store, host, "agent")


def start_fleet_drill(ledger: Ledger, store: Store, config: DrillConfig, site: str,
                      chosen: Sequence[str] | None, *, now: float) -> str:
    """Record ``drill.started`` for ``site`` and queue its jobs; the drill id. Raises :class:`DrillInputError`."""
    settings = _settings(config)
    systems = fleet_systems(config, store)
    names = list(chosen) if chosen else sorted(systems)
    unknown = [name for name in names if name not in systems]
    if unknown or not names:
        raise DrillInputError(f"unknown system {', '.join(map(repr, unknown)) or '(none enrolled)'}; the fleet has: "
                              f"{', '.join(sorted(systems)) or 'no approved agents yet'}")
    scope = []
    for name in names:
        system = systems[name]
        agent = _agent_of(store, system.host)
        targets = list(system.targets or (sorted(agent.inventory.targets) if agent else []))
        scope.append(ScopeItem(system=name, host=system.host, targets=targets or ["-"],
                               objectives=system.objectives.to_record()))
    drill_id = str(uuid.uuid4())
    ledger.append_signed(DrillStarted.model_validate({
        "record_id": str(uuid.uuid4()), "job": {"id": drill_id, "kind": "drill.started"}, "drill_id": drill_id,
        "host": config.coordinator, "site": site, "scope": scope, "config_file": config.source,
        "started": utc_now()}))
    store.execute("INSERT INTO fleet_drills (drill_id, site, state, started) VALUES (%s, %s, 'running', %s)",
                  (drill_id, site, now))
    ready: list[Callable[[], str]] = []
    for item in scope:
        _queue_system(ledger, store, config, settings, drill_id, site, item, now, ready)
    with store.transaction():  # all at once: the scratch hosts see the whole drill, and can run it in parallel
        for enqueue in ready:
            enqueue()
    return drill_id


def _settings(config: DrillConfig) -> FleetSettings:
    if config.fleet is None:
        raise DrillInputError(f"{config.source} does not serve a fleet (no listen:)")
    return config.fleet


def _queue_system(ledger: Ledger, store: Store, config: DrillConfig, settings: FleetSettings, drill_id: str,
                  site: str, item: ScopeItem, now: float, ready: list[Callable[[], str]]) -> None:
    """Add to ``ready`` the queueing of the verify job of each target of one system, or record its failed step
    when none can run."""
    agent = _agent_of(store, item.host or item.system)
    repository = None
    if agent is not None:
        repository = next((info for _, info in sorted(agent.inventory.repositories.items())
                           if info.site == site and info.id), None)
    for target in item.targets:
        if agent is None or target not in agent.inventory.targets:
            why = (f"{item.system} is not an enrolled agent" if agent is None
                   else f"{item.system} has no target {target!r}")
            _fail_step(ledger, config, drill_id, item, target, site, "unknown_target", why)
            continue
        if repository is None or repository.id is None:
            _fail_step(ledger, config, drill_id, item, target, site, "no_repository_at_site",
                       f"{item.system} has no repository at site {site!r} whose id it could read")
            continue
        readers = [a for a in enrolment.list_agents(store) if a.role == "scratch" and a.status == "approved"
                   and a.site == site and any(r.id == repository.id for r in a.inventory.repositories.values())]
        if not readers:
            _fail_step(ledger, config, drill_id, item, target, site, "no_scratch_host_at_site",
                       f"no approved scratch host at site {site!r} can read {item.system}'s repository there")
            continue
        records, keys = backup_records(ledger, item.host or item.system, target)
        spec = {"kind": "verify", "target": target, "target_kind": agent.inventory.targets[target].kind,
                "backup_host": item.host or item.system, "snapshot": LATEST, "drill_id": drill_id,
                "backup_records": records, "trusted_keys": keys}
        if config.scratch is not None:
            spec["scratch"] = config.scratch
        ready.append(functools.partial(
            queue.enqueue, store, spec, reason=f"drill {drill_id} at {site}", now=now, lifetime=24 * 3600,
            site=site, repository_id=repository.id, system=item.system, max_attempts=settings.max_attempts))


def _fail_step(ledger: Ledger, config: DrillConfig, drill_id: str, item: ScopeItem, target: str, site: str,
               code: str, message: str) -> None:
    findings = [StepFinding(code=code, severity="error", message=message)]
    started = load_drill(ledger, drill_id).started.started
    _append_step(ledger, config, drill_id, item, target, site, None, [], findings, started)


def _append_step(ledger: Ledger, config: DrillConfig, drill_id: str, item: ScopeItem, target: str, site: str,
                 repository: str | None, ledgered: list[tuple[object, object]], findings: list[StepFinding],
                 started: datetime) -> None:
    ledger.append_signed(DrillStep.model_validate({
        "record_id": str(uuid.uuid4()), "job": {"id": drill_id, "kind": "drill.step"}, "drill_id": drill_id,
        "host": config.coordinator, "system": item.system, "backup_host": item.host or item.system,
        "target": target, "site": site, "repository": repository, "objectives": item.objectives,
        **summarise_step(ledgered, findings, started, item.objectives),  # type: ignore[arg-type]
        "started": started, "finished": utc_now()}))


def advance_fleet_drill(ledger: Ledger, store: Store, config: DrillConfig, drill_id: str, *,
                        now: float) -> DrillView:
    """Record the steps of the drill's jobs that ended, and its end once every step is there. Safe to run from
    several processes at once: each drill is advanced under a lock, and a step is recorded once."""
    settings = _settings(config)
    lock = " FOR UPDATE" if store.dialect == "postgresql" else ""
    with store.transaction():
        rows = store.query(f"SELECT state FROM fleet_drills WHERE drill_id = %s{lock}", (drill_id,))  # noqa: S608
        view = load_drill(ledger, drill_id)
        if not rows or rows[0][0] != "running" or view.finished is not None:
            return view
        done = {(step.system, step.target) for step in view.steps}
        scope = {item.system: item for item in view.started.scope}
        for job in queue.list_jobs(store, drill_id=drill_id):
            target = str(job.spec.get("target"))
            item = scope.get(job.system or "")
            if item is None or (item.system, target) in done:
                continue
            state = job.state
            if (state == "queued" and now - job.created > settings.claim_timeout
                    and queue.cancel_if_unclaimed(store, job.job_id, "no scratch host took it", now=now)):
                state = "cancelled"
            if state in ("queued", "running"):
                continue
            ledgered = [(entry, entry.record) for entry in view.entries
                        if isinstance(entry.record, VerifyRecord) and entry.record.job.request == job.job_id]
            findings = []
            if not ledgered:
                code = "scratch_host_unreachable" if state == "cancelled" else "no_result"
                findings.append(StepFinding(code=code, severity="error", message=(
                    f"the verify job of {item.system}/{target} ended {state} without a result in the ledger: "
                    f"{job.outcome or 'no reason given'}")))
            _append_step(ledger, config, drill_id, item, target, view.started.site, None,
                         ledgered, findings, view.started.started)  # type: ignore[arg-type]
            done.add((item.system, target))
        view = load_drill(ledger, drill_id)
        if not view.missing():
            view = finish_drill(ledger, config, drill_id, closing=False)
            store.execute("UPDATE fleet_drills SET state = 'finished' WHERE drill_id = %s", (drill_id,))
    return view


def running_drills(store: Store) -> list[str]:
    return [str(r[0]) for r in store.query("SELECT drill_id FROM fleet_drills WHERE state = 'running' "
                                           "ORDER BY started")]

