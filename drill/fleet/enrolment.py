"""Enrolment: single-use expiring tokens, the agents they enrol, approval and revocation.

An operator makes a token for a role (``agent`` or ``scratch``) and, optionally, a site
(:func:`issue_token`); it is printed once and only its SHA-256 is kept. An agent
redeems it once, before it expires, sending its public key, host, role, site,
inventory and version (:func:`enrol`). Its id is the id of its key. With approval
required it waits as ``pending`` until :func:`approve`; :func:`revoke` ends it for
good: no jobs, no requests, and the ledger refuses its records signed after then.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from agents.contract import signing
from agents.contract.errors import DrillError
from agents.contract.inventory import Inventory
from drill.ledger.store import Store

ROLES = ("agent", "scratch")
STATUSES = ("pending", "approved", "revoked")


class EnrolmentRefused(DrillError):
    """A token or an enrolment the coordinator will not take; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UnknownAgent(DrillError):
    code = "unknown_agent"


@dataclass(frozen=True)
class AgentRow:
    """An enrolled agent as the coordinator keeps it."""

    agent_id: str
    host: str
    role: str
    site: str
    public_pem: str
    inventory: Inventory
    version: str
    capacity: int
    status: str
    enrolled: float
    revoked: float | None
    last_seen: float | None
    last_address: str | None

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "host": self.host, "role": self.role, "site": self.site,
                "version": self.version, "capacity": self.capacity, "status": self.status, "enrolled": self.enrolled,
                "revoked": self.revoked, "last_seen": self.last_seen, "last_address": self.last_address,
                "targets": sorted(self.inventory.targets), "repositories": sorted(self.inventory.repositories)}


_COLUMNS = ("agent_id, host, role, site, public_pem, inventory, version, capacity, status, enrolled, revoked, "
            "last_seen, last_address")


def _row(raw: tuple[Any, ...]) -> AgentRow:
    return AgentRow(str(raw[0]), str(raw[1]), str(raw[2]), str(raw[3]), str(raw[4]),
                    Inventory.model_validate(json.loads(raw[5])), str(raw[6]), int(raw[7]), str(raw[8]),
                    float(raw[9]), None if raw[10] is None else float(raw[10]),
                    None if raw[11] is None else float(raw[11]), None if raw[12] is None else str(raw[12]))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store: Store, role: str, site: str | None, ttl_seconds: float, now: float) -> str:
    """A new enrolment token for ``role`` (at ``site`` when given), valid ``ttl_seconds``; shown once."""
    if role not in ROLES:
        raise EnrolmentRefused("bad_role", f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    token = "drill-enrol-" + secrets.token_urlsafe(32)
    store.execute("INSERT INTO fleet_tokens (token_hash, role, site, created, expires) VALUES (%s, %s, %s, %s, %s)",
                  (token_hash(token), role, site, now, now + ttl_seconds))
    return token


@dataclass(frozen=True)
class Enrolment:
    """What an agent sends to enrol."""

    public_pem: str
    host: str
    role: str
    site: str
    inventory: Inventory
    version: str
    capacity: int = 1


def enrol(store: Store, token: str, request: Enrolment, *, digest: str, approval: bool, now: float) -> AgentRow:
    """Redeem ``token`` for the agent of ``request``; its row. Raises :class:`EnrolmentRefused`.

    The token is used up in the same transaction that enrols, so two agents
    racing with one token enrol one. Refusal codes: ``token_unknown``,
    ``token_used``, ``token_expired``, ``role_mismatch``, ``site_mismatch``,
    ``bad_key``, ``already_enrolled`` (the key of a revoked agent).
    """
    try:
        agent_id = signing.key_id(signing.load_public_pem(request.public_pem), digest)
    except signing.SignatureError as error:
        raise EnrolmentRefused("bad_key", f"the public key is not an Ed25519 PEM: {error}") from None
    lock = " FOR UPDATE" if store.dialect == "postgresql" else ""
    with store.transaction():
        rows = store.query("SELECT role, site, expires, used_by FROM fleet_tokens "  # noqa: S608 -- constant
                           "WHERE token_hash = %s" + lock, (token_hash(token),))
        if not rows:
            raise EnrolmentRefused("token_unknown", "no such enrolment token (drillctl agents token makes one)")
        role, site, expires, used_by = rows[0]
        if used_by is not None:
            raise EnrolmentRefused("token_used", "this enrolment token was used already; tokens are single-use")
        if float(expires) < now:
            raise EnrolmentRefused("token_expired", "this enrolment token has expired; make a new one")
        if role != request.role:
            raise EnrolmentRefused("role_mismatch", f"the token is for role {role!r}, the agent says {request.role!r}")
        if site is not None and site != request.site:
            raise EnrolmentRefused("site_mismatch", f"the token is for site {site!r}, the agent says {request.site!r}")
        existing = store.query("SELECT status FROM fleet_agents WHERE agent_id = %s", (agent_id,))
        if existing and existing[0][0] == "revoked":
            raise EnrolmentRefused("already_enrolled", "this key was revoked; an agent re-enrols with a new key")
        store.execute("UPDATE fleet_tokens SET used_by = %s, used = %s WHERE token_hash = %s",
                      (agent_id, now, token_hash(token)))
        status = "pending" if approval else "approved"
        values = (request.host, request.role, request.site, request.public_pem,
                  json.dumps(request.inventory.model_dump(mode="json", by_alias=True)), request.version,
                  request.capacity)
        if existing:
            store.execute("UPDATE fleet_agents SET host = %s, role = %s, site = %s, public_pem = %s, inventory = %s, "
                          "version = %s, capacity = %s WHERE agent_id = %s", (*values, agent_id))
        else:
            store.execute(f"INSERT INTO fleet_agents ({_COLUMNS}) VALUES "  # noqa: S608 -- constant columns
                          "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, NULL)",
                          (agent_id, *values, status, now, now))
    return get_agent(store, agent_id)


def get_agent(store: Store, agent_id: str) -> AgentRow:
    """The agent of ``agent_id``. Raises :class:`UnknownAgent`."""
    rows = store.query(f"SELECT {_COLUMNS} FROM fleet_agents WHERE agent_id = %s", (agent_id,))  # noqa: S608
    if not rows:
        raise UnknownAgent(f"no enrolled agent {agent_id!r} (drillctl agents list shows them)")
    return _row(rows[0])


def list_agents(store: Store) -> list[AgentRow]:
    return [_row(r) for r in store.query(f"SELECT {_COLUMNS} FROM fleet_agents ORDER BY host, agent_id")]  # noqa: S608


def find_agent(store: Store, name: str) -> AgentRow:
    """The agent named by its id, a unique prefix of it, or its host name. Raises :class:`UnknownAgent`."""
    matches = [a for a in list_agents(store) if name in (a.agent_id, a.host) or a.agent_id.startswith(name)]
    if len(matches) != 1:
        raise UnknownAgent(f"{'no' if not matches else 'more than one'} enrolled agent matches {name!r} "
                           "(drillctl agents list shows them)")
    return matches[0]


def approve(store: Store, agent_id: str) -> AgentRow:
    """Let a pending agent receive jobs. Raises :class:`EnrolmentRefused` (``revoked``) for a revoked one."""
    agent = get_agent(store, agent_id)
    if agent.status == "revoked":
        raise EnrolmentRefused("revoked", f"agent {agent.host} ({agent_id}) was revoked; it must re-enrol")
    store.execute("UPDATE fleet_agents SET status = 'approved' WHERE agent_id = %s", (agent_id,))
    return get_agent(store, agent_id)


def revoke(store: Store, agent_id: str, now: float) -> AgentRow:
    """Revoke an agent: its queued and running jobs are cancelled, its requests and later records refused."""
    get_agent(store, agent_id)
    with store.transaction():
        store.execute("UPDATE fleet_agents SET status = 'revoked', revoked = COALESCE(revoked, %s) "
                      "WHERE agent_id = %s", (now, agent_id))
        store.execute("UPDATE fleet_jobs SET state = 'cancelled', outcome = 'agent revoked', updated = %s "
                      "WHERE (agent_id = %s OR claimed_by = %s) AND state IN ('queued', 'running')",
                      (now, agent_id, agent_id))
    return get_agent(store, agent_id)


def update_inventory(store: Store, agent_id: str, inventory: Inventory) -> None:
    """Keep what the agent now says it has (its config changed, a repository's id became known). A repository
    whose id the agent could not read this time (unreachable for a moment) keeps the id known before, as long as
    it is still at the same site."""
    known = get_agent(store, agent_id).inventory.repositories
    repositories = {}
    for name, info in inventory.repositories.items():
        before = known.get(name)
        keep = info.id is None and before is not None and before.id is not None and before.site == info.site
        repositories[name] = info.model_copy(update={"id": before.id}) if keep and before else info
    merged = inventory.model_copy(update={"repositories": repositories})
    store.execute("UPDATE fleet_agents SET inventory = %s WHERE agent_id = %s",
                  (json.dumps(merged.model_dump(mode="json", by_alias=True)), agent_id))


def seen(store: Store, agent_id: str, address: str | None, now: float) -> None:
    """Note a request of the agent (its heartbeat)."""
    store.execute("UPDATE fleet_agents SET last_seen = %s, last_address = %s WHERE agent_id = %s",
                  (now, address, agent_id))


def remember_nonce(store: Store, agent_id: str, nonce: str, now: float, window: float) -> bool:
    """Whether ``nonce`` is new for this agent, remembering it.

    One statement decides, so two requests racing with one nonce get one True. Old nonces are dropped by
    :func:`forget_old_nonces`, off the request path.
    """
    inserted = store.query("INSERT INTO fleet_nonces (agent_id, nonce, seen) VALUES (%s, %s, %s) "
                           "ON CONFLICT (agent_id, nonce) DO NOTHING RETURNING agent_id", (agent_id, nonce, now))
    return bool(inserted)


def forget_old_nonces(store: Store, now: float, window: float) -> None:
    """Drop the nonces older than twice the signature window: a request that old is refused as stale anyway."""
    store.execute("DELETE FROM fleet_nonces WHERE seen < %s", (now - 2 * window,))


def agent_by_host(store: Store, host: str, role: str) -> AgentRow | None:
    """The enrolled, unrevoked agent of ``host`` in ``role`` (the newest if it enrolled again), or None."""
    rows = store.query(f"SELECT {_COLUMNS} FROM fleet_agents WHERE host = %s AND role = %s "  # noqa: S608
                       "AND status != 'revoked' ORDER BY enrolled DESC LIMIT 1", (host, role))
    return _row(rows[0]) if rows else None
