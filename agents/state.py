"""The agent's state directory: what survives a restart.

Layout::

    state_dir/
      keys/              the agent's signing key (private key 0600)
      outbox/            signed records waiting for the coordinator; sent/ and refused/ beside them
      catalog/           the index of the agent's backups, per repository
      manifests/         local copies of manifests, by data snapshot id
      staging/           a files backup's manifest while it is being backed up
      tmp/               0600 credential files handed to dump and load tools, removed after use
      verify/            the read-data cursor of restic check, per repository
      scratch/           scratch directories of verifications (when scratch.directory is not set)
      cache/restic/      restic's cache
      locks/             one lock file per policy (no two runs of a policy at once), stale-lock markers
      checked/           digests of config files that passed the schema (not checked again; config/checked.py)
      schedule.json      the last scheduled slot handled, per policy
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from agents.contract.errors import DrillError


class PolicyBusy(DrillError):
    """Another run of the same policy holds its lock."""

    code = "policy_busy"


class StateDir:
    def __init__(self, path: str) -> None:
        self.path = path

    def sub(self, *parts: str) -> str:
        """A subdirectory, created (mode 0700) on first use."""
        path = os.path.join(self.path, *parts)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    @property
    def restic_cache(self) -> str:
        return self.sub("cache", "restic")

    @property
    def lock_markers(self) -> str:
        """Where a runner notes a repository whose stale lock it could not remove."""
        return self.sub("locks")

    def manifest_path(self, snapshot_id: str) -> str:
        """Where the agent keeps its copy of a snapshot's manifest (a files manifest is binary, a dump's is JSON);
        a copy is checked against the record's digest before use, and the repository's is read when it is not."""
        return os.path.join(self.sub("manifests"), f"{snapshot_id}.manifest")

    def save_manifest(self, snapshot_id: str, data: bytes) -> None:
        write_atomically(self.manifest_path(snapshot_id), data)

    def load_manifest(self, snapshot_id: str) -> bytes | None:
        try:
            with open(self.manifest_path(snapshot_id), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def policy_lock(self, policy: str) -> Iterator[None]:
        """Hold the policy's lock for the duration; raise :class:`PolicyBusy` if taken.

        An flock is released by the kernel when the process dies, so a crash
        never leaves this lock behind.
        """
        path = os.path.join(self.sub("locks"), f"{policy}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise PolicyBusy(f"policy {policy!r} is already running (lock {path})") from exc
                raise
            yield
        finally:
            os.close(fd)

    # -- schedule ------------------------------------------------------------------
    @property
    def _schedule_file(self) -> str:
        return os.path.join(self.path, "schedule.json")

    def _read_schedule(self) -> dict[str, Any]:
        try:
            with open(self._schedule_file, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def last_handled_slot(self, policy: str) -> datetime | None:
        entry = self._read_schedule().get(policy)
        if not isinstance(entry, dict) or "last_slot" not in entry:
            return None
        return datetime.fromisoformat(entry["last_slot"])

    def set_last_handled_slot(self, policy: str, slot: datetime, outcome: str) -> None:
        data = self._read_schedule()
        data[policy] = {"last_slot": slot.isoformat(), "outcome": outcome}
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        write_atomically(self._schedule_file, json.dumps(data, indent=2, sort_keys=True).encode())


def write_atomically(path: str, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Write ``data`` to ``path`` (``mode``) so that a crash leaves the old or the new file, never half of one;
    ``durable``: the folder synced too, so that the new name itself survives a crash."""
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            if mode != 0o600:  # mkstemp's
                os.fchmod(handle.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if durable:
        sync_folder(directory)


def sync_folder(path: str) -> None:
    """Make the names in folder ``path`` survive a crash (a file renamed or made there). Raises OSError."""
    folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
