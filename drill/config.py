"""The coordinator's drill configuration: which systems a drill covers, objectives, ledger and scratch.

```yaml
state_dir: /var/lib/drill                  # coordinator key, drill reports
ledger: sqlite:///var/lib/drill/ledger.db  # or postgresql://drill@db/drill (default: state_dir/ledger.db)
digest: sha256                             # or sm3 (GB/T 39786)
objectives: {rto: 1h, rpo: 24h}            # defaults for every system
scratch: {directory: /srv/drill-scratch}   # optional: overrides the agents' scratch section
systems:
  app01:
    agent_config: /etc/drill-agent/app01.yaml
    targets: [documents, appdb]            # default: every target of that agent
    objectives: {rto: 30m}
```

Sites are not configured here: each agent config says which site each of its
repositories is at (``repositories.NAME.site``); a drill at site S restores
from the repository at S.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from agents.config.model import (
    AgentConfig,
    ConfigError,
    ConfigProblem,
    ProblemCollector,
    check_schema,
    load_config,
)
from agents.config.yamlfile import YamlSyntaxError, load_yaml
from agents.scratch.config import SCHEMA as SCRATCH_SCHEMA
from agents.scratch.config import make_scratch_config
from agents.signing import DIGESTS
from policies.config import NAME_PATTERN
from policies.durations import DurationError, parse_duration

DEFAULT_RTO = "1h"
DEFAULT_RPO = "24h"

_OBJECTIVES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Recovery objectives: RTO (drill start to verified) and RPO (drill start minus snapshot time).",
    "properties": {
        "rto": {"type": "string", "description": "Recovery time objective, e.g. 1h.", "examples": ["1h"]},
        "rpo": {"type": "string", "description": "Recovery point objective, e.g. 24h.", "examples": ["24h"]},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "drill configuration",
    "type": "object",
    "required": ["state_dir", "systems"],
    "additionalProperties": False,
    "properties": {
        "state_dir": {"type": "string", "pattern": "^/", "description": "Coordinator state: key, reports."},
        "ledger": {"type": "string", "minLength": 1,
                   "description": "sqlite:///PATH or postgresql://…; default sqlite in state_dir."},
        "digest": {"enum": list(DIGESTS), "description": "Hash of the ledger, keys and evidence."},
        "coordinator": {"type": "string", "pattern": NAME_PATTERN, "description": "Name of this coordinator."},
        "objectives": _OBJECTIVES,
        "scratch": SCRATCH_SCHEMA,
        "systems": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["agent_config"],
                "additionalProperties": False,
                "properties": {
                    "agent_config": {"type": "string", "pattern": "^/", "description": "The agent's config file."},
                    "targets": {"type": "array", "minItems": 1, "uniqueItems": True,
                                "items": {"type": "string", "pattern": NAME_PATTERN}},
                    "objectives": _OBJECTIVES,
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Objectives:
    rto: timedelta
    rpo: timedelta

    def to_json(self) -> dict[str, float]:
        return {"rto_seconds": self.rto.total_seconds(), "rpo_seconds": self.rpo.total_seconds()}


@dataclass(frozen=True)
class System:
    name: str
    agent: AgentConfig
    targets: tuple[str, ...]
    objectives: Objectives

    def repository_at(self, site: str) -> str | None:
        """The name of this system's repository at ``site``, or None."""
        return next((name for name, at in sorted(self.agent.sites.items()) if at == site), None)


@dataclass(frozen=True)
class DrillConfig:
    source: str
    state_dir: str
    ledger_url: str
    digest: str
    coordinator: str
    systems: dict[str, System] = field(default_factory=dict)

    @property
    def sites(self) -> set[str]:
        return {site for system in self.systems.values() for site in system.agent.sites.values()}


def _objectives(raw: Mapping[str, Any] | None, base: Mapping[str, str], where: tuple[str | int, ...],
                out: ProblemCollector) -> Objectives:
    values = {**base, **(raw or {})}
    parsed = {}
    for name in ("rto", "rpo"):
        try:
            parsed[name] = parse_duration(values[name])
        except DurationError as exc:
            out.add((*where, name), str(exc))
            parsed[name] = timedelta(0)
    return Objectives(parsed["rto"], parsed["rpo"])


def load_drill_config(path: str) -> DrillConfig:
    """Read and check the drill config at ``path`` and every agent config it names.

    Raises :class:`ConfigError` with every problem (file, line, field) found.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", f"cannot read the file: {exc.strerror}")]) from exc
    try:
        loaded = load_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(path, exc.line, "", f"not valid YAML: {exc}")]) from exc
    out = ProblemCollector(path, loaded)
    data = loaded.data
    if not isinstance(data, dict) or not check_schema(data, out, SCHEMA):
        if not out.problems:
            out.add((), "the file must be a mapping with state_dir and systems")
        raise ConfigError(out.problems)
    base = {"rto": DEFAULT_RTO, "rpo": DEFAULT_RPO, **(data.get("objectives") or {})}
    _objectives(data.get("objectives"), base, ("objectives",), out)
    scratch = make_scratch_config(data["scratch"]) if "scratch" in data else None
    systems = {}
    for name, spec in data["systems"].items():
        where: tuple[str | int, ...] = ("systems", name)
        try:
            agent = load_config(spec["agent_config"])
        except ConfigError as error:
            for problem in error.problems:
                out.add((*where, "agent_config"), f"{spec['agent_config']}: {problem}")
            continue
        if scratch is not None:
            agent = replace(agent, scratch=scratch)
        targets = tuple(spec.get("targets") or sorted(agent.targets))
        for index, target in enumerate(targets):
            if target not in agent.targets:
                defined = ", ".join(sorted(agent.targets))
                out.add((*where, "targets", index),
                        f"unknown target {target!r} of {spec['agent_config']}; defined: {defined}")
        systems[name] = System(name, agent, targets, _objectives(spec.get("objectives"), base,
                                                                 (*where, "objectives"), out))
    if out.problems:
        raise ConfigError(out.problems)
    state_dir = data["state_dir"]
    return DrillConfig(
        source=path,
        state_dir=state_dir,
        ledger_url=data.get("ledger") or "sqlite:///" + os.path.join(state_dir, "ledger.db"),
        digest=data.get("digest", "sha256"),
        coordinator=data.get("coordinator", "coordinator"),
        systems=systems,
    )
