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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agents import process
from agents.contract.errors import DrillError
from agents.restic.runner import BackupRun, Restic, ResticError
from targets import hashing

CHUNK = 1 << 20


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
) -> StreamedDump:
    """Run ``dump_argv`` and store its stdout as ``filename`` in a new snapshot.

    Returns the backup run and the digest and size of the stream. Raises
    :class:`DumpFailed` when the dump did not complete (no usable snapshot is
    left), :class:`ResticError` when restic failed, ``FileNotFoundError`` when the
    dump tool is missing.
    """
    # Hard: whether the dump fails or the agent is stopped, restic is killed, never interrupted.
    stop_restic = process.Cancellation(parent=process.CANCELLATION, hard=True)
    read_end, write_end = os.pipe()
    outcome: dict[str, object] = {}

    def backup() -> None:
        with os.fdopen(read_end, "rb") as stream:
            try:
                outcome["run"] = restic.backup_stdin(
                    stream, filename=filename, host=host, tags=tags, cancellation=stop_restic
                )
            except BaseException as error:
                outcome["error"] = error

    saver = threading.Thread(target=backup, name="restic-stdin", daemon=True)
    saver.start()
    hasher = hashing.new_hasher(algorithm)
    size = 0
    broken = False
    try:
        dump = process.start_process(dump_argv, env=dump_env)
    except BaseException:
        stop_restic.cancel("the dump tool could not be started")
        os.close(write_end)
        saver.join()
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
    saver.join()
    if complete:
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        run = outcome["run"]
        assert isinstance(run, BackupRun)
        return StreamedDump(run, hashing.finish(algorithm, hasher), size)
    if isinstance(outcome.get("error"), ResticError) and broken:
        raise outcome["error"]  # type: ignore[misc]
    left = _forget_truncated(restic, host, tags)
    reason = "interrupted" if process.CANCELLATION.is_cancelled else (
        f"exited with {code}" if code >= 0 else f"was killed by signal {-code}"
    )
    raise DumpFailed(f"{dump_argv[0]} {reason} after {size} bytes", dump_stderr, left)
