"""YAML loading that remembers where every value came from, and refuses what a config file never needs.

A config file may be written by someone other than the operator who runs the
agent or the coordinator, so the loader bounds the work any text can cause, and
names the line of what it refuses (:class:`YamlLimitError`):

- **no aliases** (``*name``): a config has no need for them, and nested aliases
  (the "billion laughs") expand to billions of values in everything that walks
  the data (the schema check, the line recorder); a recursive alias (``&x [*x]``)
  never ends. Anchors alone are harmless and left alone. A merge key (``<<``)
  with an inline mapping still works; with an alias it is refused as any alias.
- **nesting at most** :data:`MAX_DEPTH` levels (PyYAML composes recursively, so
  thousands of levels end in ``RecursionError``);
- **at most** :data:`MAX_NODES` values and :data:`MAX_CHARACTERS` characters in
  the document, which bounds the schema check too;
- **mapping keys are always the text written**: YAML 1.1 reads a key ``on``,
  ``yes`` or ``no`` as a boolean and ``1`` as a number, which would turn a target
  named ``on`` into ``True`` (and ``{1: a, on: b}`` into one key); here every
  scalar key stays the string written. A key that is a list or a mapping is refused.
  Values keep YAML's types (``host: on`` is a boolean, which the schema names).
- **no control characters** (NUL and the like) **or unpaired surrogates** in a
  scalar: they come only from escapes such as ``"\\0"``, no config value needs
  them, and a path holding one breaks every system call given it;
- a value YAML's own constructors cannot build (the date ``2024-13-01``, an
  integer of 5000 digits) is refused with its line instead of escaping as ``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DEPTH = 64
MAX_NODES = 50_000
MAX_CHARACTERS = 4 * 1024 * 1024

# Tab, line feed and carriage return are the only control characters a scalar may hold.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class LoadedYaml:
    """The parsed document and the 1-based line of each value, by path."""

    data: Any
    lines: dict[Path, int]
    duplicates: list[tuple[Path, int]]

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class YamlSyntaxError(ValueError):
    """The text is not YAML; carries the line and column where parsing stopped."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class YamlLimitError(YamlSyntaxError):
    """The text is YAML, but uses something this loader refuses (see the module's docstring); carries the line."""


def _line(mark: Any) -> int | None:
    return int(mark.line) + 1 if mark is not None else None


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the limits of this module; one instance per document."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # Checked on the event, before PyYAML resolves an alias or descends into a collection.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise YamlLimitError(f"an alias (*{event.anchor}) is not accepted in a config file; write the value "
                                 "out where it is needed", _line(event.start_mark))
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YamlLimitError(f"more than {MAX_NODES} values in one document; a config file needs far fewer",
                                 _line(event.start_mark))
        if isinstance(event, yaml.ScalarEvent):
            found = _FORBIDDEN.search(event.value)
            if found is not None:
                raise YamlLimitError(f"a value holds the control character or unpaired surrogate "
                                     f"U+{ord(found[0]):04X}; no config value needs one", _line(event.start_mark))
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep", _line(event.start_mark))
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        """The mapping of ``node`` with every key the text written (see the module's docstring)."""
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlLimitError("a key must be a plain name, not a list or a mapping",
                                     _line(key_node.start_mark))
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            if isinstance(exc, YamlSyntaxError):
                raise
            # PyYAML's constructors raise these for e.g. a date 2024-13-01 or an integer over 4300 digits.
            raise YamlLimitError(f"cannot read the value {_shorten(node)}: {exc}", _line(node.start_mark)) from exc


def _shorten(node: yaml.Node) -> str:
    value = str(node.value) if isinstance(node, yaml.ScalarNode) else type(node).__name__
    return repr(value if len(value) <= 40 else value[:40] + "…")


def load_yaml(text: str) -> LoadedYaml:
    """Parse ``text`` safely, within the limits of this module, and record the line of every mapping key and item.

    Raises :class:`YamlSyntaxError` for text that is not YAML, and its subclass
    :class:`YamlLimitError` for YAML this loader refuses; both carry the line when there is one.
    """
    if len(text) > MAX_CHARACTERS:
        raise YamlLimitError(f"more than {MAX_CHARACTERS // (1024 * 1024)} Mi characters; a config file needs far "
                             "fewer", None)
    loader: _ConfigLoader | None = None
    try:
        loader = _ConfigLoader(text)  # checks every character of the text
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(f"{exc.problem or exc.context}", _line(mark)) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlSyntaxError(f"the character {exc.character!r} is not allowed in YAML text", line) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None) from exc
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Path, int] = {}
    duplicates: list[tuple[Path, int]] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _record(node, (), lines, duplicates)
    return LoadedYaml(data, lines, duplicates)


def _record(node: yaml.Node, path: Path, lines: dict[Path, int], duplicates: list[tuple[Path, int]]) -> None:
    # The tree has no aliases and at most MAX_DEPTH levels (refused while composing), so this walk visits
    # each node once and its recursion is bounded.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                duplicates.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _record(value_node, child, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _record(item, child, lines, duplicates)
