"""The agent's membership of a fleet, kept in ``state_dir/fleet/coordinator.json`` once it enrolled.

Holds the coordinator's URL, the fingerprint of its certificate (pinned), the
agent's id there and the coordinator's job-signing key (pinned too). Its
presence is what makes ``drill-agent run`` work with the coordinator; without
it the agent works alone.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

from agents.config.model import AgentConfig
from agents.contract import signing
from agents.contract.errors import DrillError
from agents.contract.inventory import Inventory
from agents.fleet.link import Link
from agents.repositories import open_keys, open_repository
from agents.restic.runner import ResticError

log = logging.getLogger(__name__)


class MembershipError(DrillError):
    code = "membership_unreadable"


@dataclass(frozen=True)
class Membership:
    url: str
    fingerprint: str
    agent_id: str
    coordinator: str
    job_key: str  # PEM
    poll_seconds: float


def _path(config: AgentConfig) -> str:
    return os.path.join(config.state_dir, "fleet", "coordinator.json")


def save_membership(config: AgentConfig, membership: Membership) -> str:
    path = _path(config)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".part", "w", encoding="utf-8") as handle:
        json.dump(asdict(membership), handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".part", path)
    return path


def load_membership(config: AgentConfig) -> Membership | None:
    """The membership, or None when the agent has not enrolled. Raises :class:`MembershipError`."""
    path = _path(config)
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.loads(handle.read(1 << 20))
        membership = Membership(**raw)
        signing.load_public_pem(membership.job_key)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, signing.SignatureError) as error:
        raise MembershipError(f"{path} cannot be used ({error}); enrol again (drill-agent enrol)") from error
    return membership


def link_of(config: AgentConfig, membership: Membership) -> Link:
    return Link(membership.url, membership.fingerprint, open_keys(config).key, membership.agent_id,
                config.fleet.source_address)


def fleet_inventory(config: AgentConfig, inventory: Inventory) -> Inventory:
    """``inventory`` with the restic id of every repository this host can open (others stay without)."""
    repositories = {}
    for name, info in inventory.repositories.items():
        try:
            repository_id: str | None = open_repository(config, name).repository_id()
        except ResticError as error:
            log.warning("repository %s: its id cannot be read now (%s); the coordinator will not send jobs "
                        "for it until it can", name, error)
            repository_id = None
        repositories[name] = info.model_copy(update={"id": repository_id})
    return inventory.model_copy(update={"repositories": repositories})
