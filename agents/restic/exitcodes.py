"""restic's exit codes, through one table: an unknown code is a failure.

Source of truth: restic's ``doc/075_scripting.rst``. restic 0.14 knows only
0, 1, 2, 3 and 130; later versions added 10, 11 and 12 (which version: the
feature gates in ``features.py``, the one place versions are compared). On older
versions the same conditions exit 1 and are recognised from stderr instead, so
the rest of the agent sees one typed kind whatever the version.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Callable, Iterable

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
    NOT_FOUND = "not_found"  # a snapshot id given to restic does not exist
    ACCESS_DENIED = "access_denied"  # the backend refused the credentials (a wrong S3 key or secret)
    DAMAGED = "damaged"  # stored data is bad: a blob does not decrypt, a pack or blob is missing
    UNKNOWN_EXIT_CODE = "unknown_exit_code"


def _always(_version: ResticVersion) -> bool:
    return True


EXIT_CODES: dict[int, tuple[ResticOutcome, Callable[[ResticVersion], bool]]] = {
    # code: (meaning, whether this restic version uses it)
    0: (ResticOutcome.SUCCESS, _always),
    1: (ResticOutcome.FATAL, _always),
    2: (ResticOutcome.RUNTIME_ERROR, _always),
    3: (ResticOutcome.PARTIAL, _always),
    10: (ResticOutcome.NO_REPOSITORY, lambda v: v.has_exit_codes_10_and_11),
    11: (ResticOutcome.LOCKED, lambda v: v.has_exit_codes_10_and_11),
    12: (ResticOutcome.WRONG_PASSWORD, lambda v: v.has_exit_code_12),
    130: (ResticOutcome.INTERRUPTED, _always),
}

# On exit 1, stderr says what went wrong; these phrases are stable across
# 0.14..0.18 and let older versions report the same typed outcome.
_STDERR_HINTS: tuple[tuple[str, ResticOutcome], ...] = (
    # Refused credentials first: restic then also asks "Is there a repository at the following location?".
    ("access key id you provided does not exist", ResticOutcome.ACCESS_DENIED),
    ("signature we calculated does not match", ResticOutcome.ACCESS_DENIED),
    ("invalidaccesskeyid", ResticOutcome.ACCESS_DENIED),
    ("signaturedoesnotmatch", ResticOutcome.ACCESS_DENIED),
    ("wrong password or no key found", ResticOutcome.WRONG_PASSWORD),
    ("unable to create lock", ResticOutcome.LOCKED),
    ("repository is already locked", ResticOutcome.LOCKED),
    ("the specified bucket does not exist", ResticOutcome.NO_REPOSITORY),
    ("repository does not exist", ResticOutcome.NO_REPOSITORY),
    ("is there a repository at the following location", ResticOutcome.NO_REPOSITORY),
    ("no matching id found", ResticOutcome.NOT_FOUND),  # 0.14 and a short id on 0.18
    ("failed to load snapshot", ResticOutcome.NOT_FOUND),  # a full id on 0.18
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
    if entry is None or not entry[1](version):
        return ResticOutcome.UNKNOWN_EXIT_CODE
    outcome = entry[0]
    # 0.14's dump exits 2 (not 1) on bad data.
    if outcome in (ResticOutcome.FATAL, ResticOutcome.RUNTIME_ERROR) and damage_in(stderr_tail) is not None:
        return ResticOutcome.DAMAGED
    if outcome is ResticOutcome.FATAL:
        return outcome_from_stderr(stderr_tail) or outcome
    return outcome


# What restic says when stored data is bad (0.14 and 0.18, local and S3 backends): a blob that does not decrypt or
# hash right, a pack that is gone. A read that failed for a network reason is not damage.
_DAMAGE_PHRASES = ("ciphertext verification failed", "wrong data returned", "invalid data returned",
                   "blob not found", "tree not found")
_SNAPSHOT_FILE = re.compile(r"<snapshot/|/snapshots/[0-9a-f]")
_MISSING_OBJECT = ("no such file or directory", "the specified key does not exist", "nosuchkey")
# The pack a damage line names, best first: its full id in a path, "blob … from PACK", a short "<data/PACK>".
_PACK_PATTERNS = (re.compile(r"/data/[0-9a-f]{2}/([0-9a-f]{64})"), re.compile(r"\bfrom ([0-9a-f]{8,64})\b"),
                  re.compile(r"<(?:data|tree)/([0-9a-f]{8,64})>"))


@dataclasses.dataclass(frozen=True)
class Damage:
    """restic's own line about bad stored data, and the pack it names (when it names one)."""

    line: str
    pack: str | None


def damage_in(stderr_tail: Iterable[str]) -> Damage | None:
    """The damage restic's stderr reports, if any: the first such line (later ones are consequences)."""
    for line in _plain_lines(stderr_tail):
        lowered = line.lower()
        if _SNAPSHOT_FILE.search(lowered):
            continue  # a snapshot forgotten (by hand, by retention) is not bad data: restic says "not found"
        missing = ("readfull(<" in lowered or "load(<" in lowered) and any(m in lowered for m in _MISSING_OBJECT)
        if missing or any(phrase in lowered for phrase in _DAMAGE_PHRASES):
            packs = (pattern.search(line) for pattern in _PACK_PATTERNS)
            return Damage(line, next((found.group(1) for found in packs if found), None))
    return None


def _plain_lines(stderr_tail: Iterable[str]) -> list[str]:
    """stderr lines as text: restic 0.17+ with --json prints errors as JSON objects."""
    lines: list[str] = []
    for raw in stderr_tail:
        line = raw.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                message = obj.get("message") or (obj.get("error") or {}).get("message")
                if isinstance(message, str):
                    lines += [part.strip() for part in message.splitlines() if part.strip()]
                    continue
        if line:
            lines.append(line)
    return lines


# Causes worth naming over restic's last line (a restore into a full disk ends "There were N errors").
_TELLING_PHRASES = ("no space left on device", "disk quota exceeded", "read-only file system", "permission denied")
_ERROR_COUNT = re.compile(r"there were \d+ errors", re.IGNORECASE)


def explain_stderr(stderr_tail: Iterable[str]) -> str:
    """The line of restic's stderr that best says what went wrong (for a finding)."""
    lines = _plain_lines(stderr_tail)
    phrases = ["bucket does not exist", *(phrase for phrase, _ in _STDERR_HINTS), *_TELLING_PHRASES]
    for phrase in phrases:
        for line in reversed(lines):
            if phrase in line.lower() and "is there a repository" not in line.lower():
                return line
    telling = [line for line in lines if "fatal" in line.lower() or "error" in line.lower()]
    # "Fatal: There were 43 errors" counts; the line before it says what they were.
    specific = [line for line in telling if not _ERROR_COUNT.search(line)]
    return (specific or telling or lines or [""])[-1]


def outcome_from_stderr(stderr_tail: Iterable[str]) -> ResticOutcome | None:
    """What restic's stderr says went wrong, if it says so in a known phrase.

    Also used when restic was stopped while retrying (0.18 retries a missing
    bucket until stopped), so that the finding names the cause, not the timeout.
    """
    text = "\n".join(_plain_lines(stderr_tail)).lower()
    # A missing bucket before connection problems, and connection problems before
    # "is there a repository", which restic prints for every failure to open.
    if "bucket does not exist" in text:
        return ResticOutcome.NO_REPOSITORY
    for phrase in ("connection refused", "no such host", "i/o timeout"):
        if phrase in text:
            return ResticOutcome.UNREACHABLE
    for phrase, hinted in _STDERR_HINTS:
        if phrase in text:
            return hinted
    return None
