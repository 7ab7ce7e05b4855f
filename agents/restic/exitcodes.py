"""restic's exit codes, through one table: an unknown code is a failure.

Source of truth: restic's ``doc/075_scripting.rst``. restic 0.14 knows only
0, 1, 3 and 130; 0.17 added 10, 11 and 12 (0.17.1 for 12). On older versions
the same conditions exit 1 and are recognised from stderr instead, so the rest
of the agent sees one typed kind whatever the version.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from agents.restic.features import ResticVersion


class ResticOutcome(enum.Enum):
    """What a restic exit means to the agent."""

    SUCCESS = "success"
    PARTIAL = "partial"  # backup: some source data could not be read (exit 3)
    FATAL = "fatal"
    RUNTIME_ERROR = "runtime_error"  # Go runtime panic (exit 2)
    NO_REPOSITORY = "no_repository"
    LOCKED = "locked"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 -- a name, not a password
    INTERRUPTED = "interrupted"
    UNREACHABLE = "unreachable"
    UNKNOWN_EXIT_CODE = "unknown_exit_code"


EXIT_CODES: dict[int, tuple[ResticOutcome, tuple[int, int, int]]] = {
    # code: (meaning, first restic version that uses it)
    0: (ResticOutcome.SUCCESS, (0, 0, 0)),
    1: (ResticOutcome.FATAL, (0, 0, 0)),
    2: (ResticOutcome.RUNTIME_ERROR, (0, 0, 0)),
    3: (ResticOutcome.PARTIAL, (0, 0, 0)),
    10: (ResticOutcome.NO_REPOSITORY, (0, 17, 0)),
    11: (ResticOutcome.LOCKED, (0, 17, 0)),
    12: (ResticOutcome.WRONG_PASSWORD, (0, 17, 1)),
    130: (ResticOutcome.INTERRUPTED, (0, 0, 0)),
}

# On exit 1, stderr says what went wrong; these phrases are stable across
# 0.14..0.18 and let older versions report the same typed outcome.
_STDERR_HINTS: tuple[tuple[str, ResticOutcome], ...] = (
    ("wrong password or no key found", ResticOutcome.WRONG_PASSWORD),
    ("unable to create lock", ResticOutcome.LOCKED),
    ("repository is already locked", ResticOutcome.LOCKED),
    ("the specified bucket does not exist", ResticOutcome.NO_REPOSITORY),
    ("repository does not exist", ResticOutcome.NO_REPOSITORY),
    ("is there a repository at the following location", ResticOutcome.NO_REPOSITORY),
    ("connection refused", ResticOutcome.UNREACHABLE),
    ("no such host", ResticOutcome.UNREACHABLE),
    ("i/o timeout", ResticOutcome.UNREACHABLE),
)


def classify_exit(code: int, version: ResticVersion, stderr_tail: Iterable[str]) -> ResticOutcome:
    """Map restic's exit code (and, for exit 1, its stderr) to a :class:`ResticOutcome`.

    A code the table does not know, or one this restic version cannot produce, is
    :attr:`ResticOutcome.UNKNOWN_EXIT_CODE` -- a failure, never a success.
    """
    entry = EXIT_CODES.get(code)
    if entry is None or version.as_tuple < entry[1]:
        return ResticOutcome.UNKNOWN_EXIT_CODE
    outcome = entry[0]
    if outcome is ResticOutcome.FATAL:
        text = "\n".join(stderr_tail).lower()
        # Connection problems first: "is there a repository" is printed for them too.
        for phrase in ("connection refused", "no such host", "i/o timeout"):
            if phrase in text:
                return ResticOutcome.UNREACHABLE
        for phrase, hinted in _STDERR_HINTS:
            if phrase in text:
                return hinted
    return outcome
