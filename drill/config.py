"""The coordinator's drill configuration: which systems a drill covers, objectives, ledger and scratch.

```yaml
state_dir: /var/lib/drill                  # coordinator key, drill reports
ledger: sqlite:///var/lib/drill/ledger.db  # or postgresql://drill@db/drill (default: state_dir/ledger.db)
digest: sha256                             # or sm3 (GB/T 39786)
checkpoint_log: /var/log/drill/checkpoints.jsonl  # optional: every signed checkpoint appended, outside the ledger
objectives: {rto: 1h, rpo: 24h}            # defaults for every system
scratch: {directory: /srv/drill-scratch}   # optional: scratch settings for the drill's verify jobs
systems:
  app01:
    agent_config: /etc/drill-agent/app01.yaml
    targets: [documents, appdb]            # default: every target of that agent
    objectives: {rto: 30m}
```

Sites are not configured here: each agent says which site each of its
repositories is at (its inventory); a drill at site S restores from the
repository at S.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from agents.api import LocalAgent
from agents.contract.configfile import (
    ConfigError,
    ProblemCollector,
    check_schema,
    load_config_yaml,
    read_config_file,
)
from agents.contract.inventory import Inventory
from agents.contract.jobs import SCRATCH_SCHEMA
from agents.contract.records import Objectives as ObjectiveSeconds
from agents.contract.signing import DIGESTS
from drill.notify.sender import Mail, NotificationSettings, Webhook
from policies.config import MAX_NAMES, NAME_PATTERN
from policies.durations import DurationError, parse_duration

DEFAULT_RTO = "1h"
DEFAULT_RPO = "24h"

_OBJECTIVES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Recovery objectives: RTO (drill start to verified) and RPO (drill start minus snapshot time).",
    "properties": {
        "rto": {"type": "string", "maxLength": 64, "description": "Recovery time objective, e.g. 1h (1s to 10 years).",
                "examples": ["1h"]},
        "rpo": {"type": "string", "maxLength": 64,
                "description": "Recovery point objective, e.g. 24h (1s to 10 years).", "examples": ["24h"]},
    },
    "examples": [{"rto": "1h", "rpo": "24h"}],
}

_DURATION: dict[str, Any] = {"type": "string", "maxLength": 64}


def _duration(description: str, example: str) -> dict[str, Any]:
    return {**_DURATION, "description": description, "examples": [example]}


FLEET_KEYS: dict[str, Any] = {
    "listen": {"type": "string", "pattern": r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$", "maxLength": 256,
               "description": "host:port drillctl serve listens on (HTTPS). Setting it makes this a fleet "
               "coordinator: agents enrol with it and systems are the enrolled agents.",
               "examples": ["127.0.0.1:8443"]},
    "tls": {"type": "object", "additionalProperties": False, "required": ["cert", "key"],
            "description": "The service's certificate and key (PEM). Omitted: a self-signed one is made in "
            "state_dir/tls; agents pin its fingerprint either way.",
            "properties": {"cert": {"type": "string", "pattern": "^/", "maxLength": 4096,
                                    "description": "Certificate (PEM).", "examples": ["/etc/drill/tls.crt"]},
                           "key": {"type": "string", "pattern": "^/", "maxLength": 4096,
                                   "description": "Private key (PEM, 0600).", "examples": ["/etc/drill/tls.key"]}},
            "examples": [{"cert": "/etc/drill/tls.crt", "key": "/etc/drill/tls.key"}]},
    "verification": {
        "type": "object", "additionalProperties": False,
        "description": "The nightly verification plan.",
        "properties": {
            "max_days": {"type": "integer", "minimum": 1, "maximum": 365, "default": 7,
                         "description": "Every target of every system is restore-tested at least this often.",
                         "examples": [7]},
            "window": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$",
                       "default": "01:00-06:00", "description": "When nightly jobs may run (coordinator's local "
                       "time); the plan is made at its start.", "examples": ["01:00-06:00"]},
            "read_data_nights": {"type": "integer", "minimum": 1, "maximum": 256, "default": 30,
                                 "description": "Every pack of every repository is read within this many nights "
                                 "(restic check --read-data-subset, one part a night).", "examples": [30]},
            "new_full_within": _duration("A new full backup is verified within this time (default 24h).", "24h"),
        },
        "examples": [{"max_days": 7, "window": "01:00-06:00", "read_data_nights": 30}],
    },
    "enrolment": {
        "type": "object", "additionalProperties": False,
        "description": "How agents enrol.",
        "properties": {
            "approval": {"type": "boolean", "default": False,
                         "description": "Enrolled agents wait for drillctl agents approve before jobs flow.",
                         "examples": [True]},
            "token_ttl": _duration("How long an enrolment token is valid (default 24h).", "24h"),
        },
        "examples": [{"approval": True, "token_ttl": "24h"}],
    },
    "fleet": {
        "type": "object", "additionalProperties": False,
        "description": "Tunables of the service.",
        "properties": {
            "poll_seconds": {"type": "number", "minimum": 1, "maximum": 3600, "default": 30,
                             "description": "How often agents ask for jobs.", "examples": [30]},
            "lease": _duration("How long a claimed job is a host's without a word from it (default 10m).", "10m"),
            "silent_after": _duration("An agent not heard from for this long is agent_silent (default 30m).",
                                      "30m"),
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3,
                             "description": "How often a job whose host died is tried.", "examples": [3]},
            "retry_backoff": _duration("Wait before the first retry; doubled each time (default 5m).", "5m"),
            "claim_timeout": _duration("A drill's job no scratch host has taken within this fails its step "
                                       "(default 30m).", "30m"),
            "connections": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8,
                            "description": "Database connections of one drillctl serve.", "examples": [8]},
        },
        "examples": [{"poll_seconds": 30, "lease": "10m"}],
    },
}

_SECRET_FILE = {"type": "string", "pattern": "^/", "maxLength": 4096}
_URL = {"type": "string", "pattern": "^https?://", "maxLength": 4096}

FLEET_KEYS["notifications"] = {
    "type": "object", "additionalProperties": False,
    "description": "Who is told when a problem of drillctl status opens or closes, and the dead-man's switch "
    "pinged after each nightly plan. Sending never holds up the service; each destination retries on its own.",
    "properties": {
        "webhooks": {"type": "array", "maxItems": 32, "description": "HTTP(S) endpoints; each gets a POST.",
                     "items": {"type": "object", "additionalProperties": False, "required": ["format"],
                               "properties": {
                                   "format": {"enum": ["json", "dingtalk", "wecom"], "description": "json: "
                                              "drill's own document; dingtalk, wecom: the robots' markdown "
                                              "message.", "examples": ["dingtalk"]},
                                   "url": {**_URL, "description": "The endpoint (give url_file instead when the "
                                           "URL holds a token).", "examples": ["https://ops.example/hooks/drill"]},
                                   "url_file": {**_SECRET_FILE, "description": "A 0600 file holding the URL "
                                                "(DingTalk's and WeCom's carry the robot's token).",
                                                "examples": ["/etc/drill/dingtalk.url"]},
                                   "secret_file": {**_SECRET_FILE, "description": "DingTalk: the robot's "
                                                   "signing secret (the request is signed with it).",
                                                   "examples": ["/etc/drill/dingtalk.secret"]}},
                               "examples": [{"format": "wecom", "url_file": "/etc/drill/wecom.url"}]},
                     "examples": [[{"format": "json", "url": "https://ops.example/hooks/drill"}]]},
        "email": {"type": "object", "additionalProperties": False, "required": ["server", "from", "to"],
                  "description": "Mail through an SMTP server.",
                  "properties": {
                      "server": {"type": "string", "pattern": r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$",
                                 "maxLength": 256, "description": "host:port of the SMTP server.",
                                 "examples": ["smtp.example:587"]},
                      "from": {"type": "string", "maxLength": 256, "description": "Sender address.",
                               "examples": ["drill@example.com"]},
                      "to": {"type": "array", "minItems": 1, "maxItems": 64,
                             "items": {"type": "string", "maxLength": 256}, "description": "Recipients.",
                             "examples": [["ops@example.com"]]},
                      "starttls": {"type": "boolean", "default": True, "description": "Upgrade with STARTTLS.",
                                   "examples": [True]},
                      "username": {"type": "string", "maxLength": 256, "description": "SMTP login.",
                                   "examples": ["drill"]},
                      "password_file": {**_SECRET_FILE, "description": "A 0600 file with the SMTP password.",
                                        "examples": ["/etc/drill/smtp.pw"]}},
                  "examples": [{"server": "smtp.example:587", "from": "drill@example.com",
                                "to": ["ops@example.com"]}]},
        "deadman_url": {**_URL, "description": "Pinged (POST) after each completed nightly plan: a silence there "
                        "means the coordinator is not planning.", "examples": ["https://hc-ping.com/UUID"]},
        "deadman_url_file": {**_SECRET_FILE, "description": "A 0600 file holding the dead-man's URL.",
                             "examples": ["/etc/drill/deadman.url"]},
        "every": _duration("How often problems are compared with the last look (default 1m).", "1m"),
    },
    "examples": [{"webhooks": [{"format": "json", "url": "https://ops.example/hooks/drill"}],
                  "deadman_url": "https://hc-ping.com/UUID"}],
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "drill configuration",
    "type": "object",
    "required": ["state_dir"],
    "additionalProperties": False,
    "properties": {
        "state_dir": {"type": "string", "pattern": "^/", "maxLength": 4096,
                      "description": "Coordinator state: key, reports.",
                      "examples": ["/var/lib/drill"]},
        "ledger": {"type": "string", "minLength": 1, "maxLength": 4096,
                   "description": "sqlite:///PATH or postgresql://…; default sqlite in state_dir. Keep a "
                   "PostgreSQL password in ~/.pgpass, not in the URL.",
                   "examples": ["sqlite:///var/lib/drill/ledger.db"]},
        "digest": {"enum": list(DIGESTS), "description": "Hash of the ledger, keys and evidence.",
                   "examples": ["sha256"]},
        "coordinator": {"type": "string", "pattern": NAME_PATTERN, "description": "Name of this coordinator.",
                        "examples": ["coordinator"]},
        "checkpoint_log": {"type": "string", "pattern": "^/", "maxLength": 4096,
                           "description": "A file outside the ledger's database that every checkpoint the "
                           "coordinator signs is appended to, one JSON line each (created 0600, fsync'd; its "
                           "directory must exist). Make it append-only for the coordinator (chattr +a), or copy it "
                           "where the coordinator cannot write, so that drillctl ledger audit --against FILE "
                           "catches a ledger rewritten wholesale.",
                           "examples": ["/var/log/drill/checkpoints.jsonl"]},
        "objectives": _OBJECTIVES,
        "scratch": SCRATCH_SCHEMA,
        **FLEET_KEYS,
        "systems": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_NAMES,
            "description": "The systems a drill covers, each one agent's targets: reached through its config file "
            "(agent_config, one host), or an enrolled agent (host, a fleet; every enrolled agent is a system "
            "unless systems are listed).",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "oneOf": [{"required": ["agent_config"]}, {"required": ["host"]}],
                "additionalProperties": False,
                "properties": {
                    "host": {"type": "string", "pattern": NAME_PATTERN,
                             "description": "The enrolled agent's host name (fleet).", "examples": ["app01"]},
                    "agent_config": {"type": "string", "pattern": "^/", "maxLength": 4096,
                                     "description": "The agent's config file.",
                                     "examples": ["/etc/drill-agent/app01.yaml"]},
                    "targets": {"type": "array", "minItems": 1, "maxItems": MAX_NAMES, "uniqueItems": True,
                                "items": {"type": "string", "pattern": NAME_PATTERN},
                                "description": "Targets in scope (default: every target of the agent).",
                                "examples": [["documents", "appdb"]]},
                    "objectives": _OBJECTIVES,
                },
            },
            "examples": [{"app01": {"agent_config": "/etc/drill-agent/app01.yaml", "targets": ["documents"]}}],
        },
    },
}


@dataclass(frozen=True)
class Objectives:
    rto: timedelta
    rpo: timedelta

    def to_record(self) -> ObjectiveSeconds:
        return ObjectiveSeconds(rto_seconds=self.rto.total_seconds(), rpo_seconds=self.rpo.total_seconds())


@dataclass(frozen=True)
class System:
    name: str
    agent: LocalAgent
    inventory: Inventory
    targets: tuple[str, ...]
    objectives: Objectives

    def repository_at(self, site: str) -> str | None:
        """The name of this system's repository at ``site``, or None."""
        return self.inventory.repository_at(site)


@dataclass(frozen=True)
class FleetSystem:
    """A system of the fleet: an enrolled agent by host, the targets in scope (None: all it has), objectives."""

    name: str
    host: str
    targets: tuple[str, ...] | None
    objectives: Objectives


@dataclass(frozen=True)
class FleetSettings:
    """The service's settings (``listen``, ``tls``, ``verification``, ``enrolment``, ``fleet``), durations in
    seconds."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8443
    tls_cert: str | None = None
    tls_key: str | None = None
    max_days: int = 7
    window: tuple[int, int] = (60, 360)  # minutes after local midnight: start, end
    read_data_nights: int = 30
    new_full_within: float = 86400.0
    approval: bool = False
    token_ttl: float = 86400.0
    poll_seconds: float = 30.0
    lease: float = 600.0
    silent_after: float = 1800.0
    max_attempts: int = 3
    retry_backoff: float = 300.0
    claim_timeout: float = 1800.0
    connections: int = 8


@dataclass(frozen=True)
class DrillConfig:
    source: str
    state_dir: str
    ledger_url: str
    digest: str
    coordinator: str
    systems: dict[str, System] = field(default_factory=dict)
    scratch: dict[str, Any] | None = None  # scratch settings for the drill's verify jobs
    checkpoint_log: str | None = None  # every signed checkpoint is also appended here (outside the database)
    fleet: FleetSettings | None = None  # set (from ``listen``) when this coordinator serves a fleet
    fleet_systems: dict[str, FleetSystem] = field(default_factory=dict)
    default_objectives: Objectives = field(default_factory=lambda: Objectives(timedelta(hours=1),
                                                                              timedelta(hours=24)))
    notifications: NotificationSettings | None = None

    @property
    def sites(self) -> set[str]:
        return {site for system in self.systems.values() for site in system.inventory.sites}


def _objectives(raw: Mapping[str, Any] | None, base: Mapping[str, str], where: tuple[str | int, ...],
                out: ProblemCollector) -> Objectives:
    values = {**base, **(raw or {})}
    parsed = {}
    for name in ("rto", "rpo"):
        try:
            parsed[name] = parse_duration(values[name])
        except DurationError as exc:
            if name in (raw or {}):  # a default that is wrong was named where it was written
                out.add((*where, name), str(exc))
            parsed[name] = timedelta(0)
    return Objectives(parsed["rto"], parsed["rpo"])


def load_drill_config(path: str) -> DrillConfig:
    """Read and check the drill config at ``path`` and every agent config it names.

    Raises :class:`ConfigError` with every problem (file, line, field) found.
    """
    loaded, out = load_config_yaml(path, read_config_file(path))
    data = loaded.data
    if not isinstance(data, dict) or not check_schema(data, out, SCHEMA):
        if not out.problems:
            out.add((), "the file must be a mapping with state_dir and systems")
        raise ConfigError(out.problems)
    if os.path.exists(data["state_dir"]) and not os.path.isdir(data["state_dir"]):
        out.add(("state_dir",), f"{data['state_dir']} exists and is not a directory")
    base = {"rto": DEFAULT_RTO, "rpo": DEFAULT_RPO, **(data.get("objectives") or {})}
    _objectives(data.get("objectives"), base, ("objectives",), out)
    systems = {}
    fleet_systems = {}
    fleet = _fleet_settings(data, out) if "listen" in data else None
    if fleet is None and not data.get("systems"):
        out.add(("systems",), "name the systems a drill covers (or set listen: to serve a fleet, whose systems "
                "are the agents that enrol)")
    for name, spec in (data.get("systems") or {}).items():
        where: tuple[str | int, ...] = ("systems", name)
        if "host" in spec:
            if fleet is None:
                out.add((*where, "host"), "a system named by host is an enrolled agent: set listen: to serve a "
                        "fleet, or give agent_config")
            explicit = spec.get("targets")
            fleet_systems[name] = FleetSystem(name, spec["host"], tuple(explicit) if explicit else None,
                                              _objectives(spec.get("objectives"), base, (*where, "objectives"), out))
            continue
        try:
            agent = LocalAgent.open(spec["agent_config"])
        except ConfigError as error:
            for problem in error.problems:
                out.add((*where, "agent_config"), f"{spec['agent_config']}: {problem}")
            continue
        inventory = agent.inventory
        targets = tuple(spec.get("targets") or sorted(inventory.targets))
        for index, target in enumerate(targets):
            if target not in inventory.targets:
                defined = ", ".join(sorted(inventory.targets))
                out.add((*where, "targets", index),
                        f"unknown target {target!r} of {spec['agent_config']}; defined: {defined}")
        systems[name] = System(name, agent, inventory, targets,
                               _objectives(spec.get("objectives"), base, (*where, "objectives"), out))
    notifications = _notifications(data.get("notifications"), out)
    out.raise_if_any()
    state_dir = data["state_dir"]
    return DrillConfig(
        source=path,
        state_dir=state_dir,
        ledger_url=data.get("ledger") or "sqlite:///" + os.path.join(state_dir, "ledger.db"),
        digest=data.get("digest", "sha256"),
        coordinator=data.get("coordinator", "coordinator"),
        systems=systems,
        scratch=data.get("scratch"),
        checkpoint_log=data.get("checkpoint_log"),
        fleet=fleet,
        fleet_systems=fleet_systems,
        default_objectives=_objectives(None, base, ("objectives",), ProblemCollector(path, None)),
        notifications=notifications,
    )


def _seconds(raw: Mapping[str, Any], key: str, default: str, where: tuple[str | int, ...],
             out: ProblemCollector) -> float:
    try:
        return parse_duration(str(raw.get(key, default))).total_seconds()
    except DurationError as exc:
        out.add((*where, key), str(exc))
        return parse_duration(default).total_seconds()


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _notifications(raw: Mapping[str, Any] | None, out: ProblemCollector) -> NotificationSettings | None:
    """The notifications section (already checked against the schema), or None when there is none."""
    if not raw:
        return None
    hooks = []
    for index, hook in enumerate(raw.get("webhooks", [])):
        if ("url" in hook) == ("url_file" in hook):
            out.add(("notifications", "webhooks", index), "give either url or url_file (a URL with a token "
                    "belongs in a 0600 file)")
        if "secret_file" in hook and hook["format"] != "dingtalk":
            out.add(("notifications", "webhooks", index, "secret_file"), "only DingTalk robots sign requests")
        hooks.append(Webhook(hook["format"], hook.get("url"), hook.get("url_file"), hook.get("secret_file")))
    mail = None
    if (spec := raw.get("email")) is not None:
        if ("username" in spec) != ("password_file" in spec):
            out.add(("notifications", "email"), "username and password_file go together")
        mail = Mail(spec["server"], spec["from"], tuple(spec["to"]), bool(spec.get("starttls", True)),
                    spec.get("username"), spec.get("password_file"))
    if "deadman_url" in raw and "deadman_url_file" in raw:
        out.add(("notifications", "deadman_url"), "give either deadman_url or deadman_url_file")
    every = _seconds(raw, "every", "1m", ("notifications",), out)
    return NotificationSettings(tuple(hooks), mail, raw.get("deadman_url"), raw.get("deadman_url_file"), every)


def _fleet_settings(data: Mapping[str, Any], out: ProblemCollector) -> FleetSettings:
    host, _, port = str(data["listen"]).rpartition(":")
    if not 1 <= int(port) <= 65535:
        out.add(("listen",), f"port {port} is not between 1 and 65535")
    verification = data.get("verification") or {}
    start, _, end = str(verification.get("window", "01:00-06:00")).partition("-")
    window = (_minutes(start), _minutes(end))
    if max(window) >= 24 * 60 or window[0] == window[1]:
        out.add(("verification", "window"), f"{verification.get('window')!r} is not a window of the day "
                "(HH:MM-HH:MM, 00:00 to 23:59, start and end differ; it may pass midnight)")
    enrolment = data.get("enrolment") or {}
    fleet = data.get("fleet") or {}
    tls = data.get("tls") or {}
    return FleetSettings(
        listen_host=host.strip("[]"), listen_port=int(port), tls_cert=tls.get("cert"), tls_key=tls.get("key"),
        max_days=int(verification.get("max_days", 7)), window=window,
        read_data_nights=int(verification.get("read_data_nights", 30)),
        new_full_within=_seconds(verification, "new_full_within", "24h", ("verification",), out),
        approval=bool(enrolment.get("approval", False)),
        token_ttl=_seconds(enrolment, "token_ttl", "24h", ("enrolment",), out),
        poll_seconds=float(fleet.get("poll_seconds", 30)),
        lease=_seconds(fleet, "lease", "10m", ("fleet",), out),
        silent_after=_seconds(fleet, "silent_after", "30m", ("fleet",), out),
        max_attempts=int(fleet.get("max_attempts", 3)),
        retry_backoff=_seconds(fleet, "retry_backoff", "5m", ("fleet",), out),
        claim_timeout=_seconds(fleet, "claim_timeout", "30m", ("fleet",), out),
        connections=int(fleet.get("connections", 8)))
