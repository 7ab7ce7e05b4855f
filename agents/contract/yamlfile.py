"""YAML loading that remembers where every value came from, for error messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]


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


def load_yaml(text: str) -> LoadedYaml:
    """Parse ``text`` safely and record the line of every mapping key and item.

    Raises :class:`YamlSyntaxError` for text that is not YAML.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlSyntaxError(f"{exc.problem or exc.context}", line) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None) from exc
    lines: dict[Path, int] = {}
    duplicates: list[tuple[Path, int]] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _record(node, (), lines, duplicates)
    return LoadedYaml(data, lines, duplicates)


def _record(node: yaml.Node, path: Path, lines: dict[Path, int], duplicates: list[tuple[Path, int]]) -> None:
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
