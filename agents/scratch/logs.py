"""Reading a throwaway server's log for the line that says why it failed."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

MAX_LINE = 500


def _lines(path: str) -> list[str]:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        return [line.strip() for line in handle if line.strip()]
    return []


def first_problem_line(path: str, markers: Sequence[str], ignore: Sequence[str] = ()) -> str:
    """The first line of the log at ``path`` holding one of ``markers`` (the cause comes first) and none of
    ``ignore``, or ''."""
    line = next((line for line in _lines(path)
                 if any(m in line for m in markers) and not any(i in line for i in ignore)), "")
    return line[:MAX_LINE]


def last_line(path: str) -> str:
    lines = _lines(path)
    return lines[-1][:MAX_LINE] if lines else ""


def read_tail(path: str, limit: int = 64 << 10) -> str:
    """The last ``limit`` bytes of the log at ``path`` as text ('' when there is none)."""
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - limit))
        return handle.read().decode("utf-8", errors="replace")
    return ""


# Causes worth naming over a tool's last line: the last line is often a consequence ("initdb: removing data dir").
_CAUSES = ("no space left on device", "disk quota exceeded", "read-only file system", "permission denied",
           "cannot allocate memory")


def explain_tool_failure(stderr: Sequence[str]) -> str:
    """The line of a setup tool's stderr that says why it failed: one naming a known cause, else its last line."""
    lines = [line.strip() for line in stderr if line.strip()]
    cause = next((line for line in lines if any(c in line.lower() for c in _CAUSES)), None)
    said = cause or (lines[-1] if lines else "no message")
    return said[:MAX_LINE]
