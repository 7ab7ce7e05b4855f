"""Reading a throwaway server's log for the line that says why it failed."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

MAX_LINE = 500


def _lines(path: str) -> list[str]:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        return [line.strip() for line in handle if line.strip()]
    return []


def first_problem_line(path: str, markers: Sequence[str]) -> str:
    """The first line of the log at ``path`` holding one of ``markers`` (the cause comes first), or ''."""
    line = next((line for line in _lines(path) if any(m in line for m in markers)), "")
    return line[:MAX_LINE]


def last_line(path: str) -> str:
    lines = _lines(path)
    return lines[-1][:MAX_LINE] if lines else ""
