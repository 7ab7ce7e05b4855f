"""Loading and validating the agent's configuration into typed objects.

Validation runs in stages and collects every problem before reporting:
YAML syntax → duplicate keys → the schema → cross-field checks (unknown target or
repository, calendar expressions, durations, files that must exist). Each
problem names the file, the line and the field path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from agents.config.envfile import EnvFileError, parse_env_file
from agents.config.schema import CONFIG_SCHEMA
from agents.config.yamlfile import LoadedYaml, Path, YamlSyntaxError, load_yaml
from agents.restic.runner import Repository, default_binary
from agents.scratch.config import ScratchConfig, make_scratch_config
from policies.calendar import CalendarError, parse_calendar
from policies.config import PolicyConfig, make_policy_config
from policies.durations import DurationError, parse_duration
from targets.registry import TargetConfig, make_target_config


@dataclass(frozen=True, order=True)
class ConfigProblem:
    """One thing wrong with a config file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """The config is not usable; ``problems`` lists everything found, in file order."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


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


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class ProblemCollector:
    """Problems of one file, each given the line of the field it is about."""

    def __init__(self, source: str, loaded: LoadedYaml | None) -> None:
        self.source = source
        self.loaded = loaded
        self.problems: list[ConfigProblem] = []

    def add(self, path: Path, message: str, line: int | None = None) -> None:
        if line is None and self.loaded is not None:
            line = self.loaded.line_of(path)
        self.problems.append(ConfigProblem(self.source, line, _dotted(path), message))


def _schema_message(error: jsonschema.ValidationError) -> tuple[Path, str]:
    path: Path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            known = ", ".join(sorted(allowed))
            return (*path, extra[0]), f"unknown key {extra[0]!r}; known keys here: {known}"
    if error.validator == "required":
        return path, f"{error.message.split(' is a required')[0]} is required here"
    if error.validator == "pattern" and schema.get("pattern") == "^/":
        return path, f"{error.instance!r} must be an absolute path"
    if error.validator == "pattern" and "propertyNames" in str(error.schema_path):
        return path, f"name {error.instance!r} may use only letters, digits, '_', '.', '-'"
    return path, error.message


def check_schema(data: Any, out: ProblemCollector, schema: Mapping[str, Any] = CONFIG_SCHEMA) -> bool:
    """Add a problem (with its line) for every place ``data`` breaks ``schema``; True when there is none."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(data))
    # "if/then" failures repeat their inner errors; report the innermost ones.
    seen: set[tuple[Path, str]] = set()
    for error in errors:
        leaves = [error]
        while leaves and any(e.context for e in leaves):
            leaves = [c for e in leaves for c in (e.context or [e])]
        for leaf in leaves:
            path, message = _schema_message(leaf)
            if (path, message) not in seen:
                seen.add((path, message))
                out.add(path, message)
    return not errors


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
    try:
        loaded = load_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(source, exc.line, "", f"not valid YAML: {exc}")]) from exc
    out = ProblemCollector(source, loaded)
    for path, line in loaded.duplicates:
        out.add(path, "key appears twice; the second one would silently win", line)
    data = loaded.data
    if not isinstance(data, dict):
        out.add((), "the file must be a mapping of keys (host, state_dir, repositories, targets, policies)")
        raise ConfigError(out.problems)
    schema_ok = check_schema(data, out)
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
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", f"cannot read the file: {exc.strerror}")]) from exc
    return validate_config(path, text)
