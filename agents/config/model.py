"""Loading and validating the agent's configuration into typed objects.

Validation runs in stages and collects every problem before reporting:
YAML syntax → duplicate keys → the schema → cross-field checks (unknown target or
repository, calendar expressions, durations, files that must exist). Each
problem names the file, the line and the field path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.config.envfile import EnvFileError, parse_env_file
from agents.config.schema import CONFIG_SCHEMA
from agents.contract.configfile import (
    ConfigError,
    ProblemCollector,
    check_schema,
    load_config_yaml,
    read_config_file,
)
from agents.contract.yamlfile import Path
from agents.restic.runner import Repository, default_binary
from agents.scratch.config import ScratchConfig, make_scratch_config
from policies.calendar import CalendarError, parse_calendar
from policies.config import PolicyConfig, make_policy_config
from policies.durations import DurationError, parse_duration
from targets.registry import TargetConfig, make_target_config


@dataclass(frozen=True)
class AgentConfig:
    """A validated agent configuration."""

    source: str
    host: str
    state_dir: str
    restic_binary: str
    repositories: dict[str, Repository]
    sites: dict[str, str]
    targets: dict[str, TargetConfig]
    policies: dict[str, PolicyConfig]
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    evidence_digest: str = "sha256"
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)


def _read_env_file(path: str, where: Path, out: ProblemCollector) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_env_file(handle.read())
    except FileNotFoundError:
        out.add(where, f"env file {path} does not exist")
    except PermissionError:
        out.add(where, f"env file {path} is not readable by this user")
    except EnvFileError as exc:
        out.add(where, f"env file {path}: {exc}")
    return {}


def _make_repositories(raw: Mapping[str, Any], out: ProblemCollector) -> tuple[dict[str, Repository], dict[str, str]]:
    repositories: dict[str, Repository] = {}
    sites: dict[str, str] = {}
    for name, spec in raw.items():
        where: Path = ("repositories", name)
        if ("password_file" in spec) == ("password_command" in spec):
            out.add(where, "give exactly one of password_file or password_command")
        password_file = spec.get("password_file")
        if password_file is not None and not os.path.isfile(password_file):
            out.add((*where, "password_file"), f"password file {password_file} does not exist")
        env = _read_env_file(spec["env_file"], (*where, "env_file"), out) if "env_file" in spec else {}
        repositories[name] = Repository(
            name=name,
            url=spec["url"],
            password_file=password_file,
            password_command=spec.get("password_command"),
            env=env,
            connect_timeout=float(spec.get("connect_timeout", 60)),
            stall_timeout=float(spec.get("stall_timeout", 300)),
        )
        sites[name] = spec.get("site", name)
    return repositories, sites


def _check_policies(data: Mapping[str, Any], repositories: Mapping[str, Repository], out: ProblemCollector) -> None:
    targets = data.get("targets", {})
    for name, policy in data.get("policies", {}).items():
        where: Path = ("policies", name)
        for index, target in enumerate(policy.get("targets", [])):
            if target not in targets:
                out.add((*where, "targets", index), f"unknown target {target!r}; defined: {', '.join(sorted(targets))}")
        repository = policy.get("repository")
        if repository is not None and repository not in repositories:
            out.add(
                (*where, "repository"),
                f"unknown repository {repository!r}; defined: {', '.join(sorted(repositories))}",
            )
        for index, other in enumerate(policy.get("replicate_to", [])):
            at: Path = (*where, "replicate_to", index)
            if other not in repositories:
                out.add(at, f"unknown repository {other!r}; defined: {', '.join(sorted(repositories))}")
            elif other == repository:
                out.add(at, f"{other!r} is the policy's own repository; replicate to another one")
            elif repository in repositories:
                source, dest = repositories[repository].env, repositories[other].env
                clash = sorted(k for k in set(source) & set(dest) if source[k] != dest[k])
                if clash:
                    out.add(
                        at,
                        f"restic copy runs with one set of backend credentials, but the env files of "
                        f"{repository!r} and {other!r} set {', '.join(clash)} differently",
                    )
        for level, text in (policy.get("schedule") or {}).items():
            try:
                parse_calendar(text)
            except CalendarError as exc:
                out.add((*where, "schedule", level), str(exc))
        if "max_full_interval" in policy:
            try:
                parse_duration(policy["max_full_interval"])
            except DurationError as exc:
                out.add((*where, "max_full_interval"), str(exc))


def _check_scratch(data: Mapping[str, Any], out: ProblemCollector) -> None:
    for engine in ("postgres", "mysql"):
        server = ((data.get("scratch") or {}).get(engine) or {}).get("server") or {}
        path = server.get("password_file")
        if path is not None and not os.path.isfile(path):
            out.add(("scratch", engine, "server", "password_file"), f"password file {path} does not exist")


def validate_config(source: str, text: str) -> AgentConfig:
    """Validate config ``text`` read from ``source`` and build the typed config.

    Raises :class:`ConfigError` with every problem found.
    """
    loaded, out = load_config_yaml(source, text)
    data = loaded.data
    if not isinstance(data, dict):
        out.add((), "the file must be a mapping of keys (host, state_dir, repositories, targets, policies)")
        raise ConfigError(out.problems)
    schema_ok = check_schema(data, out, CONFIG_SCHEMA)
    if not schema_ok:
        raise ConfigError(out.problems)
    repositories, sites = _make_repositories(data["repositories"], out)
    _check_policies(data, repositories, out)
    _check_scratch(data, out)
    if out.problems:
        raise ConfigError(out.problems)
    return AgentConfig(
        source=source,
        host=data.get("host") or socket.gethostname().split(".")[0],
        state_dir=data["state_dir"],
        restic_binary=(data.get("restic") or {}).get("binary") or default_binary(),
        repositories=repositories,
        sites=sites,
        targets={name: make_target_config(name, spec) for name, spec in data["targets"].items()},
        policies={name: make_policy_config(name, spec) for name, spec in data["policies"].items()},
        scratch=make_scratch_config(data.get("scratch")),
        evidence_digest=data.get("evidence_digest", "sha256"),
        raw=data,
    )


def load_config(path: str) -> AgentConfig:
    """Read and validate the config file at ``path``. Raises :class:`ConfigError`."""
    return validate_config(path, read_config_file(path))
