"""``drill-agent enrol``: join a coordinator with a one-time token, pinning its certificate and job key."""

from __future__ import annotations

import re

from agents.api import LocalAgent
from agents.config.model import AgentConfig
from agents.contract.documents import DocumentError, validate
from agents.contract.errors import InputError
from agents.contract.fleet import EnrolAnswer
from agents.fleet.link import Link
from agents.fleet.membership import Membership, fleet_inventory, save_membership
from agents.repositories import open_keys

FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")
VERSION = "drill-agent 0.1"


class EnrolInputError(InputError):
    code = "bad_enrolment"


def enrol(config: AgentConfig, url: str, token: str, fingerprint: str, site: str | None = None) -> Membership:
    """Enrol with the coordinator at ``url`` (certificate ``fingerprint``) using ``token``; the membership, saved in
    the state directory. Raises :class:`EnrolInputError` for bad input and ``LinkError`` for the coordinator's
    refusal or no answer."""
    if not FINGERPRINT.match(fingerprint):
        raise EnrolInputError(f"--server-fingerprint must be sha256:<64 hex digits> as drillctl serve prints it, "
                              f"not {fingerprint!r}")
    if not url.startswith("https://"):
        raise EnrolInputError(f"--coordinator must be an https:// URL, not {url!r}")
    agent = LocalAgent(config)
    inventory = fleet_inventory(config, agent.inventory)
    chosen_site = site or _site_of(config)
    keys = open_keys(config)
    link = Link(url.rstrip("/"), fingerprint, keys.key, keys.key.keyid, config.fleet.source_address)
    raw = link.post("/v1/enrol", {
        "token": token, "public_key": keys.public_pem(), "host": config.host, "role": config.role,
        "site": chosen_site, "capacity": config.fleet.capacity, "version": VERSION,
        "inventory": inventory.model_dump(mode="json", by_alias=True)})
    try:
        answer = validate(EnrolAnswer, raw, "the coordinator's answer")
    except DocumentError as error:
        raise EnrolInputError(str(error)) from None
    membership = Membership(url.rstrip("/"), fingerprint, answer.agent_id, answer.coordinator, answer.job_key,
                            answer.poll_seconds)
    save_membership(config, membership)
    return membership


def _site_of(config: AgentConfig) -> str:
    """The host's site: that of its repositories when they agree (a scratch host reads those at its site)."""
    sites = sorted(set(config.sites.values()))
    if len(sites) != 1:
        raise EnrolInputError(f"this host's repositories are at several sites ({', '.join(sites)}): say which "
                              "site the host is at with --site")
    return sites[0]
