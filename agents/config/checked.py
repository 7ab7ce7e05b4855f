"""Config files that passed the schema, remembered so that an unchanged one is not checked against it again.

Checking a config against its JSON Schema means importing the validator library,
≈ 0.1 s of every ``drill-agent`` command -- a tenth of a one-second incremental
backup. After a config has passed *every* check, the digest of what decided the
schema's verdict is remembered as an empty file ``state_dir/checked/<digest>``:
the config as parsed (what the schema judges, whatever the YAML reader made of
the text), the schema, and the code that applies it (the validator library's
files and drill's own checks, by file identity). Changing any of them makes a
new digest, so the schema is checked again. Only the schema check is skipped;
every check across fields (files, repositories, policies) runs each time.

A memo is trusted only where this user alone can have written it: the state
directory, its ``checked/`` and the memo itself owned by this user, writable by
no one else, and not symbolic links (a state directory that is one gets no
memo), so that no one else can plant a memo for a config that would fail.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

from agents.contract import configfile

log = logging.getLogger(__name__)

SUBDIRECTORY = "checked"
KEPT = 16
"""Memos kept per state directory; older ones (of configs since edited) are removed when a new one is written."""


def schema_digest(data: Any, schema: Mapping[str, Any]) -> str:
    """The digest of the parsed config ``data`` checked against ``schema`` by the code installed now (hex)."""
    digest = hashlib.sha256()
    for part in (json.dumps(data, sort_keys=True, default=repr), json.dumps(schema, sort_keys=True),
                 *_checking_code()):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()


def _checking_code() -> list[str]:
    """The identity (path, inode, size, modification and change times) of the files whose code decides a schema
    verdict: drill's checks and every module of the validator library (an upgrade replaces them)."""
    files = [configfile.__file__]
    found = importlib.util.find_spec("jsonschema")  # found without importing it: that is the point
    identities = []
    if found is not None and found.origin is not None:
        package = os.path.dirname(found.origin)
        with os.scandir(package) as entries:
            files += sorted(entry.path for entry in entries if entry.name.endswith(".py"))
    else:
        identities.append("jsonschema: not found")
    for path in files:
        try:
            status = os.stat(path)
        except OSError:
            identities.append(f"{path}: missing")
            continue
        identities.append(f"{path}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}")
    return identities


def passed_before(state_dir: object, digest: str) -> bool:
    """True when a memo of ``digest`` lies in ``state_dir`` (the config's value, not yet checked) and is
    trustworthy: the state directory and its ``checked/`` are this user's, writable by no one else."""
    if not isinstance(state_dir, str) or not os.path.isabs(state_dir):
        return False
    memos = os.path.join(state_dir, SUBDIRECTORY)
    try:
        return all(_private(os.lstat(path), directory) for path, directory in (
            (state_dir, True), (memos, True), (os.path.join(memos, digest), False)))
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False


def remember(state_dir: str, digest: str) -> None:
    """Note that the config of ``digest`` passed; only in an existing, private state directory.

    A memo that cannot be written costs only the next run's time: it is logged, not raised.
    """
    memos = os.path.join(state_dir, SUBDIRECTORY)
    try:
        if not _private(os.lstat(state_dir), True):
            return
        os.makedirs(memos, mode=0o700, exist_ok=True)
        if not _private(os.lstat(memos), True):
            return
        descriptor = os.open(os.path.join(memos, digest), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.utime(descriptor)  # the newest memos are the ones kept
        finally:
            os.close(descriptor)
        _keep_newest(memos)
    except OSError as error:
        log.debug("could not remember that the config passed its schema in %s: %s", memos, error)


def _private(status: os.stat_result, directory: bool) -> bool:
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(status.st_mode) and status.st_uid == os.geteuid() and not status.st_mode & 0o022


def _keep_newest(memos: str) -> None:
    with os.scandir(memos) as entries:
        found = sorted(((entry.stat(follow_symlinks=False).st_mtime_ns, entry.path) for entry in entries),
                       reverse=True)
    for _, path in found[KEPT:]:
        os.unlink(path)
