"""Claiming a scratch directory for one verification, and reaping the ones whose verification died.

A verification holds an ``flock`` on its scratch directory's ``.owner`` file
for as long as it runs, and notes every process it starts there -- sandboxed
servers, and the ``restic restore`` writing into it (``.processes``: pid and
start time). The kernel releases the lock when the
process dies, however it dies (kill -9 included), so a directory whose lock can
be taken belongs to nobody: its noted processes that still run (the same
processes: pid and start time match) are killed and the directory is removed.
Processes are found by these notes, never by their names.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator

from agents.scratch.account import ScratchUnusable

log = logging.getLogger(__name__)

OWNER = ".owner"
PROCESSES = ".processes"
PREFIX = "verify-"


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def scratch_directory(parent: str) -> Iterator[str]:
    """A new scratch directory under ``parent``, held by this process for the block, removed afterwards.

    It is created under a name the reaper ignores, claimed, then renamed: a reaper never sees it unclaimed.
    Raises :class:`ScratchUnusable` when it cannot be created.
    """
    try:
        os.makedirs(parent, exist_ok=True)
        making = tempfile.mkdtemp(prefix=".claiming-", dir=parent)
        fd = os.open(os.path.join(making, OWNER), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise ScratchUnusable(f"cannot create a scratch directory in {parent}: {error.strerror}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        directory = os.path.join(parent, PREFIX + os.path.basename(making).removeprefix(".claiming-"))
        os.rename(making, directory)
        try:
            yield directory
        finally:
            _kill_noted(directory)
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        os.close(fd)
        shutil.rmtree(making, ignore_errors=True)  # when the rename did not happen


def note_process(directory: str, pid: int) -> None:
    """Remember a process started for ``directory`` (to be killed if its verification dies)."""
    with open(os.path.join(directory, PROCESSES), "a", encoding="utf-8") as handle:
        handle.write(f"{pid} {_start_time(pid) or ''}\n")


def _owned(directory: str) -> bool:
    """Whether a live process holds ``directory``'s lock (the lock is released when its holder dies)."""
    try:
        fd = os.open(os.path.join(directory, OWNER), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


def _kill_noted(directory: str) -> None:
    with contextlib.suppress(FileNotFoundError), open(os.path.join(directory, PROCESSES), encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                continue
            pid = int(parts[0])
            if _start_time(pid) == parts[1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def reap(parent: str) -> list[str]:
    """Remove the scratch directories under ``parent`` whose verification died; kill what they left running.

    Returns the directories removed.
    """
    reaped = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(parent)):
            directory = os.path.join(parent, name)
            if not name.startswith(PREFIX) or not os.path.isdir(directory) or os.path.islink(directory):
                continue
            if _owned(directory):
                continue
            _kill_noted(directory)
            shutil.rmtree(directory, ignore_errors=True)
            reaped.append(directory)
            log.warning("removed %s, left by a verification that died", directory)
    return reaped
