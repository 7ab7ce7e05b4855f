"""How every config file of drill is read: YAML with lines, a schema, and every problem at once with file:line.

Used by the agent's config and the coordinator's alike, so both report the same
way: :func:`read_config_file` → :func:`load_yaml` (safe, with the line of every
value) → duplicate keys → :func:`check_schema` → the caller's cross-field checks,
each problem added to a :class:`ProblemCollector`; :class:`ConfigError` carries
them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from agents.contract.errors import DrillError
from agents.contract.yamlfile import LoadedYaml, Path, YamlSyntaxError, load_yaml


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


class ConfigError(DrillError):
    """The config is not usable; ``problems`` lists everything found, in file order."""

    code = "config_invalid"

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, source: str, message: str, line: int | None = None) -> ConfigError:
        return cls([ConfigProblem(source, line, "", message)])


def dotted(path: Iterable[str | int]) -> str:
    """``policies.nightly.targets[0]`` for ("policies", "nightly", "targets", 0)."""
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
        self.problems.append(ConfigProblem(self.source, line, dotted(path), message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def _schema_message(error: jsonschema.ValidationError) -> tuple[Path, str]:
    path: Path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        if extra:
            known = ", ".join(sorted(allowed))
            return (*path, extra[0]), f"unknown key {extra[0]!r}; known keys here: {known}"
    if error.validator == "required":
        return path, f"{error.message.split(' is a required')[0]} is required here"
    if error.validator == "pattern" and schema.get("pattern") == "^/":
        return path, f"{error.instance!r} must be an absolute path"
    if error.validator == "pattern" and "propertyNames" in str(error.schema_path):
        return path, f"name {error.instance!r} may use only letters, digits, '_', '.', '-'"
    message = error.message
    return path, message if len(message) <= 300 else message[:300] + "…"


def check_schema(data: Any, out: ProblemCollector, schema: Mapping[str, Any]) -> bool:
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


def read_config_file(path: str) -> str:
    """The text of the config file at ``path``. Raises :class:`ConfigError` saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError.single(path, f"cannot read the file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError.single(path, f"the file is not UTF-8 text (byte {exc.start})") from exc


def load_config_yaml(source: str, text: str) -> tuple[LoadedYaml, ProblemCollector]:
    """Parse ``text`` and note its duplicate keys. Raises :class:`ConfigError` for text that is not YAML."""
    try:
        loaded = load_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError.single(source, f"not valid YAML: {exc}", exc.line) from exc
    out = ProblemCollector(source, loaded)
    for path, line in loaded.duplicates:
        out.add(path, "key appears twice; the second one would silently win", line)
    return loaded, out
