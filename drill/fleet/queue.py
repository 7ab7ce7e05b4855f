"""The job queue: jobs waiting for a host, claimed under a lease, finished by the records they end in.

A queued job either names the agent that must run it (a backup, a check on the
agent's own repository) or leaves the host open: then any approved scratch host
at the job's ``site`` that can read the repository with the job's restic
``repository_id`` may claim it, up to that host's capacity. :func:`claim` hands
a job out at most once at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several coordinators on one database never hand out the same job; SQLite has a
single writer), and signs it for that host then: the repository is named as
*that host* names it, with a fresh nonce and the job's expiry.

A claimed job holds a lease the host renews while it runs; a job whose lease
ran out (the host died) goes back to the queue with a backoff, and fails after
``max_attempts``. The records a job ends in finish it (:func:`finish`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.contract import signing
from agents.contract.jobs import JOB_PAYLOAD_TYPE, parse_job
from drill.fleet.enrolment import AgentRow
from drill.ledger.store import Store

STATES = ("queued", "running", "done", "failed", "expired", "cancelled")
BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class QueuedJob:
    """A job as the queue keeps it."""

    job_id: str
    kind: str
    agent_id: str | None
    site: str | None
    repository_id: str | None
    reason: str
    drill_id: str | None
    state: str
    attempts: int
    claimed_by: str | None
    outcome: str | None
    spec: dict[str, Any]
    system: str | None = None
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "kind": self.kind, "agent_id": self.agent_id, "site": self.site,
                "repository_id": self.repository_id, "reason": self.reason, "drill_id": self.drill_id,
                "state": self.state, "attempts": self.attempts, "claimed_by": self.claimed_by,
                "outcome": self.outcome, "target": self.spec.get("target"), "system": self.system}


_COLUMNS = ("job_id, kind, agent_id, site, repository_id, reason, drill_id, state, attempts, claimed_by, outcome, "
            "spec, system, created")


def _job(raw: tuple[Any, ...]) -> QueuedJob:
    return QueuedJob(str(raw[0]), str(raw[1]), raw[2], raw[3], raw[4], str(raw[5]), raw[6], str(raw[7]),
                     int(raw[8]), raw[9], raw[10], json.loads(raw[11]), raw[12], float(raw[13]))


def enqueue(store: Store, spec: dict[str, Any], *, reason: str, now: float, lifetime: float,
            agent_id: str | None = None, site: str | None = None, repository_id: str | None = None,
            not_before: float | None = None, max_attempts: int = 3, system: str | None = None) -> str:
    """Queue the job ``spec`` (a ``drill.job/v1`` without id, nonce or expiry; for an open job, without the
    repository name); its id. ``reason`` says why it was queued (``plan show``)."""
    # Refuse a malformed job now, not at claim (an open job's repository is named by the host that claims it).
    parse_job({**spec, "repository": spec.get("repository", "named-at-claim")})
    if agent_id is None and (site is None or repository_id is None):
        raise ValueError("a job for no agent in particular needs a site and a repository id")
    job_id = str(spec.get("id") or secrets.token_hex(16))
    store.execute(
        "INSERT INTO fleet_jobs (job_id, kind, agent_id, site, repository_id, reason, drill_id, system, spec, state, "
        "attempts, max_attempts, not_before, expires, created, updated) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', 0, %s, %s, %s, %s, %s)",
        (job_id, spec["kind"], agent_id, site, repository_id, reason, spec.get("drill_id"), system, json.dumps(spec),
         max_attempts, now if not_before is None else not_before, now + lifetime, now, now))
    return job_id


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _repository_name(agent: AgentRow, repository_id: str | None) -> str | None:
    for name, info in agent.inventory.repositories.items():
        if repository_id is not None and info.id == repository_id:
            return name
    return None


def claim(store: Store, agent: AgentRow, key: signing.SigningKey, *, now: float, lease: float,
          coordinator: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Claim what ``agent`` may run now, up to its free capacity (and ``limit``, what it says it has free); the
    signed job envelopes, oldest job first."""
    if agent.status != "approved":
        return []
    repository_ids = sorted({info.id for info in agent.inventory.repositories.values() if info.id})
    skip = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
    open_jobs = ""
    params: list[Any] = [now, now, agent.agent_id]
    if agent.role == "scratch" and repository_ids:
        open_jobs = (f" OR (agent_id IS NULL AND site = %s AND repository_id IN "
                     f"({', '.join(['%s'] * len(repository_ids))}))")
        params += [agent.site, *repository_ids]
    signed = []
    with store.transaction():
        running = int(store.query("SELECT COUNT(*) FROM fleet_jobs WHERE claimed_by = %s AND state = 'running'",
                                  (agent.agent_id,))[0][0])
        free = agent.capacity - running if limit is None else min(limit, agent.capacity - running)
        if free <= 0:
            return []
        rows = store.query(
            f"SELECT {_COLUMNS}, expires FROM fleet_jobs WHERE state = 'queued' AND not_before <= %s "  # noqa: S608
            f"AND expires > %s AND (agent_id = %s{open_jobs}) ORDER BY created, job_id LIMIT {int(free)}{skip}",
            params)
        for raw in rows:
            job = _job(raw[:-1])
            document = {**job.spec, "id": job.job_id, "issued": _iso(now), "expires": _iso(float(raw[-1])),
                        "nonce": secrets.token_hex(16), "requested_by": coordinator}
            if job.agent_id is None:
                document["repository"] = _repository_name(agent, job.repository_id)
            envelope = key.sign_document(document, JOB_PAYLOAD_TYPE)
            store.execute("UPDATE fleet_jobs SET state = 'running', claimed_by = %s, lease_until = %s, "
                          "attempts = attempts + 1, envelope = %s, updated = %s WHERE job_id = %s",
                          (agent.agent_id, now + lease, json.dumps(envelope), now, job.job_id))
            signed.append(envelope)
    return signed


def renew(store: Store, agent_id: str, job_ids: list[str], *, now: float, lease: float) -> None:
    """Extend the lease of the jobs ``agent_id`` says it is running."""
    for job_id in job_ids:
        store.execute("UPDATE fleet_jobs SET lease_until = %s, updated = %s WHERE job_id = %s AND claimed_by = %s "
                      "AND state = 'running'", (now + lease, now, job_id, agent_id))


def requeue_stale(store: Store, *, now: float, backoff: float = BACKOFF_SECONDS) -> list[str]:
    """Put back the running jobs whose lease ran out (their host died or lost the coordinator): queued again after
    a backoff that doubles each attempt, failed after ``max_attempts``; queued jobs past their expiry expire.
    Returns the ids of the jobs put back."""
    skip = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
    back = []
    with store.transaction():
        rows = store.query("SELECT job_id, attempts, max_attempts, claimed_by FROM fleet_jobs "  # noqa: S608
                           f"WHERE state = 'running' AND lease_until < %s{skip}", (now,))
        for job_id, attempts, max_attempts, host in rows:
            if int(attempts) >= int(max_attempts):
                store.execute("UPDATE fleet_jobs SET state = 'failed', outcome = %s, updated = %s WHERE job_id = %s",
                              (f"no result after {attempts} attempts (last on {host}: lease expired)", now, job_id))
                continue
            store.execute("UPDATE fleet_jobs SET state = 'queued', claimed_by = NULL, lease_until = NULL, "
                          "not_before = %s, outcome = %s, updated = %s WHERE job_id = %s",
                          (now + backoff * 2 ** (int(attempts) - 1), f"lease expired on {host}", now, job_id))
            back.append(str(job_id))
        store.execute("UPDATE fleet_jobs SET state = 'expired', updated = %s WHERE state = 'queued' AND expires <= %s",
                      (now, now))
    return back


def finish(store: Store, job_id: str, agent_id: str, outcome: str, *, now: float) -> bool:
    """Finish a job from a record of ``agent_id`` naming it: ``done`` for a result, ``failed`` for a refusal or an
    error on the host's side. Whether the job was waiting for it (a late record of a re-queued job is kept in the
    ledger, and changes nothing here)."""
    state = "failed" if outcome in ("refused", "error", "could_not_verify") else "done"
    rows = store.query("UPDATE fleet_jobs SET state = %s, outcome = %s, updated = %s WHERE job_id = %s "
                       "AND claimed_by = %s AND state = 'running' RETURNING job_id",
                       (state, outcome, now, job_id, agent_id))
    return bool(rows)


def list_jobs(store: Store, state: str | None = None, drill_id: str | None = None) -> list[QueuedJob]:
    where, params = [], []
    if state is not None:
        where.append("state = %s")
        params.append(state)
    if drill_id is not None:
        where.append("drill_id = %s")
        params.append(drill_id)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return [_job(r) for r in store.query(f"SELECT {_COLUMNS} FROM fleet_jobs {clause}ORDER BY created, job_id",  # noqa: S608
                                         params)]


def count_jobs(store: Store) -> dict[str, int]:
    """How many jobs the queue holds in each state (a state with none is missing)."""
    return {str(state): int(count) for state, count in
            store.query("SELECT state, COUNT(*) FROM fleet_jobs GROUP BY state")}


def cancel_if_unclaimed(store: Store, job_id: str, why: str, *, now: float) -> bool:
    """Cancel a job no host has taken yet; whether it was."""
    rows = store.query("UPDATE fleet_jobs SET state = 'cancelled', outcome = %s, updated = %s WHERE job_id = %s "
                       "AND state = 'queued' RETURNING job_id", (why, now, job_id))
    return bool(rows)
