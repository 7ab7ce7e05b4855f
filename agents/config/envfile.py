"""Environment files (``KEY=value`` lines) holding a repository backend's credentials.

Values are secrets: they go into restic's environment and nowhere else, and no
error message ever quotes one.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    """A line that is not ``KEY=value``; carries the line number, never the value."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def parse_env_file(text: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines; ``#`` comments, blank lines and ``export`` are allowed.

    Quotes around a value are removed. Raises :class:`EnvFileError`.
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise EnvFileError(f"line {number} is not KEY=value", number)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
