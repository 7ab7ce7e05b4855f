"""How every config file of drill is read: YAML with lines, a schema, and every problem at once with file:line.

Used by the agent's config and the coordinator's alike, so both report the same
way: :func:`read_config_file` → :func:`load_yaml` (safe, with the line of every
value) → duplicate keys → :func:`check_schema` → the caller's cross-field checks,
each problem added to a :class:`ProblemCollector`; :class:`ConfigError` carries
them all.

A config file, and every file it names that drill reads itself, is treated as
hostile input: only a regular file is opened (a FIFO would block the reader
forever, a device never end), its size is bounded, and it must be UTF-8
(:func:`read_text_file`, :func:`check_readable_file`); the YAML loader bounds
aliases, nesting and size (:mod:`agents.contract.yamlfile`); :func:`check_schema`
refuses NaN and infinity, which JSON Schema would take for numbers.
"""

from __future__ import annotations

import codecs
import functools
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.contract.errors import DrillError
from agents.contract.yamlfile import LoadedYaml, Path, YamlLimitError, YamlSyntaxError, load_yaml

if TYPE_CHECKING:
    import jsonschema

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""The largest config file read; a real one is a few kilobytes."""

MAX_SECRET_BYTES = 64 * 1024
"""The largest password or env file accepted; a real one is a few hundred bytes."""


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

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` (or its nearest ancestor), when the document is known."""
        return self.loaded.line_of(path) if self.loaded is not None else None

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
        return path, f"name {_short(error.instance)} may use only letters, digits, '_', '.', '-' (at most 63)"
    if error.validator == "maxItems" and isinstance(error.instance, list):
        return path, f"a list of {len(error.instance)} items; at most {schema.get('maxItems')} are accepted here"
    if error.validator == "maxProperties" and isinstance(error.instance, dict):
        return path, f"{len(error.instance)} entries; at most {schema.get('maxProperties')} are accepted here"
    if error.validator == "maxLength" and isinstance(error.instance, str):
        return path, f"{_short(error.instance)} is longer than {schema.get('maxLength')} characters"
    message = error.message
    shown = repr(error.instance)
    if len(shown) > 80 and message.startswith(shown):  # "[{}, {}, … 50000 items] is too long": keep the verdict
        message = _short(error.instance) + message[len(shown):]
    message = message if len(message) <= 300 else message[:300] + "…"
    if error.validator == "type" and isinstance(error.instance, bool):
        message += "; YAML reads an unquoted yes/no/on/off/true/false as a boolean: quote the word to mean it"
    elif error.validator == "type" and error.instance is None:
        message += " (the value is empty)"
    return path, message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def _canonical(value: Any) -> Any:
    """A hashable form of ``value`` equal exactly when JSON Schema calls two values equal (1 == 1.0, True != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null",)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((_canonical(k), _canonical(v)) for k, v in value.items()))
    return ("other", type(value).__name__, repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    # jsonschema's own check compares every pair when the items cannot be sorted (mappings): a list of
    # 100,000 mappings in a config would take hours. Hashing a canonical form is linear.
    from jsonschema import ValidationError  # noqa: PLC0415 -- imported by then: this runs inside a validation

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{_short(item)} appears more than once")
            return
        seen.add(key)


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 with a linear ``uniqueItems``. Imported on first use: the import is a tenth of a second of
    every command, and an unchanged agent config is not checked again (``agents/config/checked.py``)."""
    import jsonschema.validators  # noqa: PLC0415

    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"uniqueItems": _unique_items})


def _non_finite_numbers(data: Any) -> Iterator[Path]:
    """The path of every NaN or infinity in ``data``; iterative, so any depth is fine."""
    stack: list[tuple[Path, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            yield path
        elif isinstance(value, dict):
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))


MAX_SCHEMA_PROBLEMS = 100
"""The most schema problems (and duplicate keys) reported for one document; a hostile one could list 50,000."""


def check_schema(data: Any, out: ProblemCollector, schema: Mapping[str, Any]) -> bool:
    """Add a problem (with its line) for every place ``data`` breaks ``schema``; True when there is none.

    Also refuses NaN and infinity anywhere: JSON Schema counts them as numbers, and NaN passes every
    ``minimum`` and ``maximum`` (a NaN timeout would never expire). Reports at most
    :data:`MAX_SCHEMA_PROBLEMS` problems, then says that more follow.
    """
    non_finite = sorted(_non_finite_numbers(data), key=str)
    for path in non_finite[:MAX_SCHEMA_PROBLEMS]:
        out.add(path, "not a finite number (NaN and infinity are not accepted)")
    found = bool(non_finite)
    # "if/then" failures repeat their inner errors; report the innermost ones.
    seen: set[tuple[Path, str]] = set()
    for error in _validator_class()(schema).iter_errors(data):  # lazily: stop early on a hostile document
        leaves = [error]
        while leaves and any(e.context for e in leaves):
            leaves = [c for e in leaves for c in (e.context or [e])]
        for leaf in leaves:
            if isinstance(leaf.instance, float) and not math.isfinite(leaf.instance):
                continue  # said above, once
            found = True
            path, message = _schema_message(leaf)
            if (path, message) in seen:
                continue
            if len(seen) >= MAX_SCHEMA_PROBLEMS:
                out.add((), f"more problems follow; fix these {MAX_SCHEMA_PROBLEMS} first", line=out.line_of(path))
                return False
            seen.add((path, message))
            out.add(path, message)
    return not found


class FileRefusedError(ValueError):
    """A file drill will not read: ``reason`` completes "the file …" ("is a directory, not a regular file").

    ``line`` is set when a byte of its text is the problem.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _refuse_status(status: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _KINDS if test(status.st_mode)), "not a regular file")
        raise FileRefusedError(f"is {kind}, not a regular file")
    if status.st_size > limit:
        raise FileRefusedError(f"is larger than {_size(limit)} ({status.st_size} bytes)")


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"


def _refuse_os_error(exc: OSError) -> FileRefusedError:
    if isinstance(exc, FileNotFoundError):
        return FileRefusedError("does not exist")
    if isinstance(exc, PermissionError):
        return FileRefusedError("is not readable by this user")
    return FileRefusedError(f"cannot be read: {exc.strerror or exc}")


def check_readable_file(path: str, limit: int = MAX_SECRET_BYTES) -> None:
    """Check, without opening it, that ``path`` is a regular file this user may read, of at most ``limit`` bytes.

    For the files a config names that another program reads (restic's password file). Symbolic links are
    followed. Raises :class:`FileRefusedError` saying what is wrong.
    """
    try:
        status = os.stat(path)
    except OSError as exc:
        raise _refuse_os_error(exc) from exc
    except ValueError as exc:  # a NUL in the path; the YAML loader refuses them, a caller may not have
        raise FileRefusedError("cannot be read: the path holds a NUL character") from exc
    _refuse_status(status, limit)
    if not os.access(path, os.R_OK):
        raise FileRefusedError("is not readable by this user")


_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
         (codecs.BOM_UTF16_BE, "UTF-16"))


def read_text_file(path: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of the regular file at ``path``, of at most ``limit`` bytes.

    The file is checked before it is opened and again on the open descriptor (opened non-blocking, so a FIFO
    swapped in between cannot block the reader), and at most ``limit`` + 1 bytes are read. Raises
    :class:`FileRefusedError`: not a regular file, too large, unreadable, UTF-16 or UTF-32, NUL bytes, or
    not UTF-8 (with the line of the first bad byte).
    """
    check_readable_file(path, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise _refuse_os_error(exc) from exc
    try:
        with os.fdopen(fd, "rb") as handle:
            _refuse_status(os.fstat(handle.fileno()), limit)
            content = handle.read(limit + 1)
    except OSError as exc:
        raise _refuse_os_error(exc) from exc
    if len(content) > limit:  # grew since it was checked
        raise FileRefusedError(f"is larger than {_size(limit)}")
    return decode_text(content)


def decode_text(content: bytes) -> str:
    """``content`` as UTF-8 text. Raises :class:`FileRefusedError` naming UTF-16/32, NUL bytes or a bad byte's line."""
    for bom, encoding in _BOMS:
        if content.startswith(bom):
            raise FileRefusedError(f"is {encoding} text (it starts with a byte-order mark); save it as UTF-8", 1)
    if b"\0" in content:
        # UTF-16 without a byte-order mark is valid UTF-8 with a NUL in every other byte.
        at = content.index(b"\0")
        raise FileRefusedError("holds NUL bytes, so it is UTF-16 or binary, not UTF-8 text; save it as UTF-8",
                               content.count(b"\n", 0, at) + 1)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise FileRefusedError(f"is not UTF-8 text (byte {exc.start}); save it as UTF-8", line) from exc


def read_config_file(path: str) -> str:
    """The text of the config file at ``path``. Raises :class:`ConfigError` saying why it cannot be read."""
    try:
        return read_text_file(path, MAX_CONFIG_BYTES)
    except FileRefusedError as exc:
        raise ConfigError.single(path, f"cannot read the file: it {exc.reason}", exc.line) from exc


def load_config_yaml(source: str, text: str) -> tuple[LoadedYaml, ProblemCollector]:
    """Parse ``text`` and note its duplicate keys.

    Raises :class:`ConfigError` for text that is not YAML or that the loader refuses (aliases, deep
    nesting, too many values: see :mod:`agents.contract.yamlfile`), with the line.
    """
    try:
        loaded = load_yaml(text)
    except YamlLimitError as exc:
        raise ConfigError.single(source, f"refused: {exc}", exc.line) from exc
    except YamlSyntaxError as exc:
        raise ConfigError.single(source, f"not valid YAML: {exc}", exc.line) from exc
    out = ProblemCollector(source, loaded)
    for path, line in loaded.duplicates[:MAX_SCHEMA_PROBLEMS]:
        out.add(path, "key appears twice; the second one would silently win", line)
    if len(loaded.duplicates) > MAX_SCHEMA_PROBLEMS:
        out.add((), f"{len(loaded.duplicates) - MAX_SCHEMA_PROBLEMS} more keys appear twice",
                loaded.duplicates[MAX_SCHEMA_PROBLEMS][1])
    return loaded, out
