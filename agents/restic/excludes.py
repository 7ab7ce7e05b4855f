"""Exact paths as restic exclude patterns.

The agent decides what a files target leaves out (``targets/files/select.py``)
and tells restic the result as literal absolute paths, never as the operator's
patterns, so that restic's walk and the agent's walk agree. A literal path
becomes a pattern by escaping restic's wildcards (``*``, ``?``, ``[``, ``\\``).

restic reads ``--exclude-file`` line by line, trims each line and expands
``$VARIABLES`` in it; a path with a ``$``, a line break or surrounding
whitespace therefore goes on argv as ``--exclude`` instead (a path is not a
secret). Pure: nothing here touches the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_WILDCARDS = "\\*?["


def escape(path: str) -> str:
    """``path`` as a restic pattern matching exactly that path."""
    return "".join("\\" + ch if ch in _WILDCARDS else ch for ch in path)


def _file_safe(pattern: str) -> bool:
    return "$" not in pattern and "\n" not in pattern and "\r" not in pattern and pattern == pattern.strip()


@dataclass(frozen=True)
class Exclusions:
    """restic's exclusions: lines for ``--exclude-file`` and the few patterns that must go on argv."""

    file_lines: tuple[str, ...]
    argv_patterns: tuple[str, ...]

    def file_text(self) -> bytes:
        return "".join(line + "\n" for line in self.file_lines).encode("utf-8", "surrogateescape")


def make_exclusions(excluded: Sequence[str]) -> Exclusions:
    """Patterns that make restic leave out exactly ``excluded`` (absolute paths) and nothing else."""
    patterns = [escape(path) for path in excluded]
    return Exclusions(tuple(p for p in patterns if _file_safe(p)), tuple(p for p in patterns if not _file_safe(p)))
