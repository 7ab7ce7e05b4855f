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

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "drill configuration",
    "type": "object",
    "required": ["state_dir", "systems"],
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
        "systems": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_NAMES,
            "description": "The systems a drill covers, each one agent's targets.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["agent_config"],
                "additionalProperties": False,
                "properties": {
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
class DrillConfig:
    source: str
    state_dir: str
    ledger_url: str
    digest: str
    coordinator: str
    systems: dict[str, System] = field(default_factory=dict)
    scratch: dict[str, Any] | None = None  # scratch settings for the drill's verify jobs
    checkpoint_log: str | None = None  # every signed checkpoint is also appended here (outside the database)

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
    for name, spec in data["systems"].items():
        where: tuple[str | int, ...] = ("systems", name)
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
    )
