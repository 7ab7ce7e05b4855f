"""Loading and validating the agent's configuration into typed objects.

Validation runs in stages and collects every problem before reporting:
YAML syntax → duplicate keys → the schema → cross-field checks (unknown target or
repository, calendar expressions, durations, files that must exist). Each
problem names the file, the line and the field path.

The files a config names that the agent or restic read (env files, password
files) must be regular files this user can read, of at most 64 KiB: a FIFO or a
device there would block a backup forever.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.config import checked
from agents.config.envfile import EnvFileError, parse_env_file
from agents.config.schema import CONFIG_SCHEMA
from agents.contract.configfile import (
    MAX_SECRET_BYTES,
    ConfigError,
    FileRefusedError,
    ProblemCollector,
    check_readable_file,
    check_schema,
    load_config_yaml,
    read_config_file,
    read_text_file,
)
from agents.contract.yamlfile import Path
from agents.restic import rclone
from agents.restic.repository import Repository
from agents.restic.runner import default_binary
from agents.scratch.config import ScratchConfig, make_scratch_config
from policies.calendar import CalendarError, parse_calendar
from policies.config import PolicyConfig, make_policy_config
from policies.durations import DurationError, parse_duration
from targets.registry import TargetConfig, make_target_config


@dataclass(frozen=True)
class FleetSettings:
    """The ``fleet`` section: how this agent works with a coordinator."""

    capacity: int = 1
    poll_seconds: float = 30.0
    source_address: str | None = None
    accept: tuple[str, ...] | None = None


def make_fleet_settings(raw: Mapping[str, Any] | None) -> FleetSettings:
    raw = raw or {}
    accept = raw.get("accept")
    return FleetSettings(capacity=int(raw.get("capacity", 1)), poll_seconds=float(raw.get("poll_seconds", 30)),
                         source_address=raw.get("source_address"),
                         accept=tuple(accept) if accept is not None else None)


@dataclass(frozen=True)
class AgentConfig:
    """A validated agent configuration."""

    source: str
    host: str
    state_dir: str
    restic_binary: str
    rclone_binary: str
    repositories: dict[str, Repository]
    sites: dict[str, str]
    targets: dict[str, TargetConfig]
    policies: dict[str, PolicyConfig]
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    evidence_digest: str = "sha256"
    role: str = "agent"
    fleet: FleetSettings = field(default_factory=FleetSettings)
    agent_keys: bool = True  # restic.agent_keys: open repositories with a key of the agent's own (agentkey.py)
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def accepted_kinds(self) -> tuple[str, ...]:
        """The kinds of coordinator job this agent runs."""
        if self.fleet.accept is not None:
            return self.fleet.accept
        return ("verify", "check") if self.role == "scratch" else ("backup", "check")


def _read_env_file(path: str, where: Path, out: ProblemCollector) -> dict[str, str]:
    try:
        return parse_env_file(read_text_file(path, MAX_SECRET_BYTES))
    except FileRefusedError as exc:
        out.add(where, f"env file {path} {exc.reason}" + (f" (its line {exc.line})" if exc.line else ""))
    except EnvFileError as exc:
        out.add(where, f"env file {path}: {exc}")
    return {}


def _check_password_file(path: str | None, where: Path, out: ProblemCollector, *, required: bool = True) -> None:
    """Add a problem unless ``path`` (when given) is a regular, readable file of at most 64 KiB.

    With ``required`` False a missing file is no problem (see :func:`_check_target_files`).
    """
    if path is None:
        return
    try:
        check_readable_file(path, MAX_SECRET_BYTES)
    except FileRefusedError as exc:
        if required or exc.reason != "does not exist":
            out.add(where, f"password file {path} {exc.reason}")


def _check_state_dir(path: str, out: ProblemCollector) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        out.add(("state_dir",), f"{path} exists and is not a directory")


def _make_repositories(raw: Mapping[str, Any], out: ProblemCollector) -> tuple[dict[str, Repository], dict[str, str]]:
    repositories: dict[str, Repository] = {}
    sites: dict[str, str] = {}
    for name, spec in raw.items():
        where: Path = ("repositories", name)
        if ("password_file" in spec) == ("password_command" in spec):
            out.add(where, "give exactly one of password_file or password_command")
        password_file = spec.get("password_file")
        _check_password_file(password_file, (*where, "password_file"), out)
        env = _read_env_file(spec["env_file"], (*where, "env_file"), out) if "env_file" in spec else {}
        repositories[name] = Repository(
            name=name,
            url=spec["url"],
            password_file=password_file,
            password_command=spec.get("password_command"),
            env=env,
            connect_timeout=float(spec.get("connect_timeout", 60)),
            stall_timeout=float(spec.get("stall_timeout", 300)),
            lock_wait=float(spec.get("lock_wait", 600)),
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
                _check_copy_credentials(repositories[repository], repositories[other], at, out)
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


def _check_copy_credentials(source: Repository, destination: Repository, at: Path, out: ProblemCollector) -> None:
    """Two repositories whose credentials differ can be copied between only when both are on S3 (the copy
    then reaches each through an rclone remote of its own)."""
    clash = rclone.credentials_clash(source, destination)
    if not clash:
        return
    try:
        rclone.copy_pair(source, destination)
    except rclone.NotTranslatable as exc:
        out.add(at, f"the env files of {source.name!r} and {destination.name!r} set {', '.join(clash)} "
                f"differently and {exc}: restic copy can hold two sets of credentials only for two S3 "
                "repositories; use one set, or give both as rclone: URLs with their remotes in the env files")


def _check_role(data: Mapping[str, Any], out: ProblemCollector) -> None:
    if data.get("role", "agent") != "agent":
        return
    for key in ("targets", "policies"):
        if not data.get(key):
            out.add((key,), f"an agent (role: agent) needs at least one entry in {key}; a scratch host says "
                    "role: scratch")


def _check_scratch(data: Mapping[str, Any], out: ProblemCollector) -> None:
    for engine in ("postgres", "mysql"):
        server = ((data.get("scratch") or {}).get(engine) or {}).get("server") or {}
        _check_password_file(server.get("password_file"), ("scratch", engine, "server", "password_file"), out)


def _check_target_files(data: Mapping[str, Any], out: ProblemCollector) -> None:
    # A database target's password file is read by the agent when the job runs, and may be missing where
    # the config is only validated (a scratch host, the coordinator): only one that is there but unusable
    # (a directory, a FIFO that would block the job, too large, unreadable) is a problem now.
    for name, spec in data.get("targets", {}).items():
        _check_password_file(spec.get("password_file"), ("targets", name, "password_file"), out, required=False)


def validate_config(source: str, text: str, *, remembered: bool = False) -> AgentConfig:
    """Validate config ``text`` read from ``source`` and build the typed config.

    ``remembered``: the schema check is skipped when this config passed it before, and a pass is remembered, in
    the config's own state directory (``agents/config/checked.py``) -- for the agent's own commands, which run
    the same config again and again; checking a config on request always runs every check.
    Raises :class:`ConfigError` with every problem found.
    """
    loaded, out = load_config_yaml(source, text)
    data = loaded.data
    if not isinstance(data, dict):
        out.add((), "the file must be a mapping of keys (host, state_dir, repositories, targets, policies)")
        raise ConfigError(out.problems)
    digest = checked.schema_digest(data, CONFIG_SCHEMA) if remembered else ""
    passed_before = remembered and checked.passed_before(data.get("state_dir"), digest)
    if not passed_before and not check_schema(data, out, CONFIG_SCHEMA):
        raise ConfigError(out.problems)
    _check_state_dir(data["state_dir"], out)
    _check_role(data, out)
    repositories, sites = _make_repositories(data["repositories"], out)
    _check_policies(data, repositories, out)
    _check_scratch(data, out)
    _check_target_files(data, out)
    if out.problems:
        raise ConfigError(out.problems)
    if remembered and not passed_before:
        checked.remember(data["state_dir"], digest)
    return AgentConfig(
        source=source,
        host=data.get("host") or socket.gethostname().split(".")[0],
        state_dir=data["state_dir"],
        restic_binary=(data.get("restic") or {}).get("binary") or default_binary(),
        rclone_binary=(data.get("restic") or {}).get("rclone_binary") or "rclone",
        agent_keys=(data.get("restic") or {}).get("agent_keys", True),
        repositories=repositories,
        sites=sites,
        targets={name: make_target_config(name, spec) for name, spec in data.get("targets", {}).items()},
        policies={name: make_policy_config(name, spec) for name, spec in data.get("policies", {}).items()},
        scratch=make_scratch_config(data.get("scratch")),
        evidence_digest=data.get("evidence_digest", "sha256"),
        role=data.get("role", "agent"),
        fleet=make_fleet_settings(data.get("fleet")),
        raw=data,
    )


def load_config(path: str, *, remembered: bool = False) -> AgentConfig:
    """Read and validate the config file at ``path`` (``remembered``: see :func:`validate_config`).

    Raises :class:`ConfigError`.
    """
    return validate_config(path, read_config_file(path), remembered=remembered)
