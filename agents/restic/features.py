"""restic's version, detected once per binary, and the features that depend on it.

restic 0.14 (Debian 12) and 0.18 behave differently in ways the agent relies on;
every such difference is one property here, never a version comparison scattered
through the code (borgmatic's ``feature.py`` habit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.contract.errors import DrillError

MINIMUM_VERSION = (0, 14, 0)

_VERSION_LINE = re.compile(r"^restic (\d+)\.(\d+)\.(\d+)")


class UnsupportedResticVersion(DrillError):
    """The restic binary is older than the agent supports or did not say its version."""

    code = "restic_unsupported"


@dataclass(frozen=True, order=True)
class ResticVersion:
    """A parsed ``restic version`` line, comparable as a tuple."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def as_tuple(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def has_json_restore(self) -> bool:
        """``restore --json`` prints status and summary messages (0.16)."""
        return self.as_tuple >= (0, 16, 0)

    @property
    def has_exit_codes_10_and_11(self) -> bool:
        """Exit codes 10 (no repository) and 11 (lock failed) exist (0.17.0)."""
        return self.as_tuple >= (0, 17, 0)

    @property
    def has_exit_code_12(self) -> bool:
        """Exit code 12 (wrong password) exists (0.17.1, restic #4959)."""
        return self.as_tuple >= (0, 17, 1)

    @property
    def prints_full_snapshot_ids(self) -> bool:
        """The backup summary carries the full snapshot id, not the 8-character short id (0.17)."""
        return self.as_tuple >= (0, 17, 0)

    @property
    def has_stuck_request_timeout(self) -> bool:
        """``--stuck-request-timeout`` gives up on a backend request that hangs (0.18)."""
        return self.as_tuple >= (0, 18, 0)


def parse_version(output: str) -> ResticVersion:
    """Parse the first line of ``restic version``.

    Raises :class:`UnsupportedResticVersion` when the line is not recognised or the
    version is below :data:`MINIMUM_VERSION`.
    """
    match = _VERSION_LINE.match(output.strip())
    if match is None:
        raise UnsupportedResticVersion(f"cannot read a version from {output.strip()[:80]!r}")
    version = ResticVersion(int(match[1]), int(match[2]), int(match[3]))
    if version.as_tuple < MINIMUM_VERSION:
        minimum = ".".join(map(str, MINIMUM_VERSION))
        raise UnsupportedResticVersion(f"restic {version} is too old; drill needs restic {minimum} or newer")
    return version
