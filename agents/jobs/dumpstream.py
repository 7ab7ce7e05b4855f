"""Streaming a dump tool's output into ``restic backup --stdin``, safely on every restic version.

The agent sits between the two processes: it reads the dump from the tool's
stdout, hashes it and writes it to restic's stdin. No temporary copy touches the
disk. The order of the ending is what makes it safe:

* the dump ended with exit 0 → restic's stdin is closed → restic writes the snapshot;
* the dump failed, was killed, or the database went away → restic is killed
  (SIGKILL) **while its stdin is still open**, so it never sees an end of stream
  and makes no snapshot. Not SIGINT: restic 0.14's ``--stdin`` cannot tell a
  short stream from a complete one, and restic 0.18 answers SIGINT by saving
  what it has read as a snapshot. Then the repository is searched for a snapshot
  carrying this job's tags; any found is forgotten.

:class:`PendingStdinBackup` is the same ending for a file whose content is
known only later (a backup's manifest): its restic starts early and waits.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from agents import process
from agents.contract.errors import DrillError
from agents.inthread import InThread
from agents.restic.runner import BackupRun, Restic, ResticError
from targets import hashing

CHUNK = 1 << 20

log = logging.getLogger(__name__)


class DumpFailed(DrillError):
    """The dump tool did not deliver a complete dump; ``stderr_tail`` says why."""

    code = "dump_failed"

    def __init__(self, message: str, stderr_tail: Sequence[str], snapshot_left: str | None = None) -> None:
        super().__init__(message)
        self.stderr_tail = tuple(stderr_tail)
        # A snapshot restic made anyway and that could not be forgotten (it is not good).
        self.snapshot_left = snapshot_left


@dataclass(frozen=True)
class StreamedDump:
    run: BackupRun
    digest: str
    size: int


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _forget_truncated(restic: Restic, host: str, tags: Sequence[str]) -> str | None:
    """Forget any snapshot this failed stream left; return the id of one that could not be forgotten."""
    try:
        found = [s.id for s in restic.snapshots(host=host) if set(tags) <= set(s.tags)]
    except ResticError:
        return "unknown (the repository could not be listed)"
    if found and not restic.forget_quietly(found):
        return found[0]
    return None


def stream_dump(
    dump_argv: tuple[str, ...],
    dump_env: Mapping[str, str],
    restic: Restic,
    *,
    filename: str,
    host: str,
    tags: Sequence[str],
    algorithm: str = "sha256",
    waiting: Sequence[PendingStdinBackup] = (),
) -> StreamedDump:
    """Run ``dump_argv`` and store its stdout as ``filename`` in a new snapshot.

    Returns the backup run and the digest and size of the stream. Raises
    :class:`DumpFailed` when the dump did not complete (no usable snapshot is
    left), :class:`ResticError` when restic failed, ``FileNotFoundError`` when the
    dump tool is missing.

    ``waiting``: restics of the same job waiting to store what follows the dump
    (:class:`PendingStdinBackup`), abandoned when the dump failed.
    """
    # Hard: whether the dump fails or the agent is stopped, restic is killed, never interrupted.
    stop_restic = process.Cancellation(parent=process.CANCELLATION, hard=True)
    read_end, write_end = os.pipe()

    def backup() -> BackupRun:
        with os.fdopen(read_end, "rb") as stream:
            return restic.backup_stdin(stream, filename=filename, host=host, tags=tags, cancellation=stop_restic)

    saver = InThread(backup, "restic-stdin")
    hasher = hashing.new_hasher(algorithm)
    size = 0
    broken = False
    try:
        dump = process.start_process(dump_argv, env=dump_env)
    except BaseException:
        stop_restic.cancel("the dump tool could not be started")
        os.close(write_end)
        saver.wait()
        raise
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while not process.CANCELLATION.is_cancelled:
            n = dump.stdout.readinto(buffer)  # type: ignore[attr-defined]
            if not n:
                break
            hasher.update(view[:n])
            size += n
            try:
                _write_all(write_end, view[:n])
            except BrokenPipeError:
                broken = True  # restic died; its own error is reported below
                break
    finally:
        if process.CANCELLATION.is_cancelled or broken:
            dump.stop()
        code, dump_stderr = dump.finish()
    complete = code == 0 and not broken and not process.CANCELLATION.is_cancelled
    if not complete:
        # Kill restic before it can see the end of the stream.
        stop_restic.cancel("the dump did not complete")
    os.close(write_end)
    saver.wait()
    if complete:
        return StreamedDump(saver.result(), hashing.finish(algorithm, hasher), size)
    failure = saver.failure()
    if isinstance(failure, ResticError) and broken:
        raise failure
    for pending in waiting:
        pending.abandon()  # its lock would keep `forget`, which needs the repository alone, waiting for lock_wait
    left = _forget_truncated(restic, host, tags)
    reason = "interrupted" if process.CANCELLATION.is_cancelled else (
        f"exited with {code}" if code >= 0 else f"was killed by signal {-code}"
    )
    raise DumpFailed(f"{dump_argv[0]} {reason} after {size} bytes", dump_stderr, left)


class PendingStdinBackup:
    """A ``restic backup --stdin`` started before its content exists, so that restic's start overlaps other work.

    Every restic command spends its first half second or more deriving the repository's key and loading its index
    before it reads anything. A database backup has its manifest only when the dump and the checksums end: its
    restic, started with the job, is by then waiting on its stdin, and storing the manifest costs only the writing.

    :meth:`store` writes the content and ends the stream: restic makes the snapshot. :meth:`abandon` (also on
    leaving the ``with`` block without storing) kills restic while its stdin is open: no snapshot. Should the agent
    itself be killed, restic sees an empty stream end (0.18 stores it, 0.14 refuses); such a snapshot carries the
    killed job's ``drill.job`` tag, no record vouches for it, the next job forgets it (``agents/jobs/leftovers.py``).

    While it waits, restic must have opened the repository within ``connect_timeout`` (its first status line) and
    is then never taken for stalled; once the content is written, it must progress within ``stall_timeout``.
    """

    def __init__(self, restic: Restic, *, filename: str, host: str, tags: Sequence[str]) -> None:
        """Start restic; returns at once. Failures (restic missing, repository unreachable) surface in
        :meth:`store`."""
        self._restic = restic
        # Hard: restic is killed, never interrupted (restic 0.18 saves what it has read on SIGINT).
        self._stop = process.Cancellation(parent=process.CANCELLATION, hard=True)
        self._stall = process.StallWatch(math.inf, first_within=restic.repository.connect_timeout)
        self._done = False
        self._ending = threading.Lock()  # the dump's thread may abandon it while the job's thread ends it
        read_end, self._write_end = os.pipe()
        tags = tuple(tags)

        def save() -> BackupRun:
            with os.fdopen(read_end, "rb") as stream:
                return restic.backup_stdin(stream, filename=filename, host=host, tags=tags,
                                           cancellation=self._stop, stall=self._stall)

        self._saver = InThread(save, "restic-pending")

    def __enter__(self) -> PendingStdinBackup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.abandon()

    def store(self, data: bytes | IO[bytes]) -> BackupRun:
        """Write ``data`` (bytes, or a file read to its end) as the file's whole content and wait for the snapshot
        (id short on restic 0.14).

        Raises :class:`ResticError` when restic failed, before or after the content was written; OSError when a
        file given could not be read. Only once.
        """
        with self._ending:
            if self._done:
                raise RuntimeError("this pending backup was already stored or abandoned")
            self._done = True
        self._stall.expect_progress_within(self._restic.repository.stall_timeout)
        try:
            if isinstance(data, bytes):
                _write_all(self._write_end, memoryview(data))
            else:
                while chunk := data.read(CHUNK):
                    _write_all(self._write_end, memoryview(chunk))
        except BrokenPipeError:
            pass  # restic ended before reading: its own error is below
        except BaseException:
            self._stop.cancel("its content could not be written whole")  # killed before the stream ends
            self._saver.wait()
            os.close(self._write_end)
            raise
        os.close(self._write_end)
        return self._saver.result()

    def abandon(self) -> None:
        """Kill restic before its stream ends (no snapshot); nothing once stored or abandoned."""
        with self._ending:
            if self._done:
                return
            self._done = True
        self._stop.cancel("its content will not be written")
        self._saver.wait()
        os.close(self._write_end)
        # Killed, restic left its lock behind; remove it now (a lock of a process that is gone), also while the
        # agent is being stopped, so that no other host finds the repository locked until the lock goes stale.
        try:
            self._restic.unlock(cancellation=process.Cancellation())
        except ResticError as error:
            log.warning("could not remove the lock a stopped restic left in %s: %s", self._restic.repository.name,
                        error.describe())
