"""Streaming a dump out of restic into a loader (pg_restore, the mariadb client), hashing it on the way.

The mirror image of ``dumpstream``: ``restic dump`` writes the stored file to a
pipe, the agent hashes every byte and passes it to the loader's stdin. No copy of
the dump touches the scratch disk. If the loader gives up early, the rest of the
stream is still read and hashed, so the digest tells whether the stored dump
itself is intact -- which decides between "the backup is bad" and "the scratch
side could not take it".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from agents import process
from agents.inthread import InThread
from agents.restic.runner import Restic
from targets import hashing

CHUNK = 1 << 20


@dataclass(frozen=True)
class StreamedRestore:
    digest: str
    size: int
    loader_code: int | None  # None: no loader (only hashed)
    loader_stderr: tuple[str, ...]


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class DumpStream:
    """``restic dump`` of one stored file into a pipe, started before anything reads it.

    restic derives its key, loads the index and finds the file meanwhile (a second or so, most of it CPU), then
    waits on the full pipe: a verification starts it while its throwaway database is still starting. Nothing is
    owed while nobody reads (no stall is counted); :meth:`into` reads it -- once -- and :meth:`abandon` stops it
    unread.
    """

    def __init__(self, restic: Restic, snapshot_id: str, path: str) -> None:
        """Start restic. Raises ``OSError`` when no pipe can be had, ``RuntimeError`` when no thread."""
        self._stall_timeout = restic.repository.stall_timeout
        self._stall = process.StallWatch(math.inf)
        self._stop = process.Cancellation(parent=process.CANCELLATION)
        self._read, write = os.pipe()
        self._taken = False

        def dump() -> None:
            with os.fdopen(write, "wb") as out:
                restic.dump_to(snapshot_id, path, out, self._stall, cancellation=self._stop)

        try:
            self._dumping = InThread(dump, "restic-dump")
        except BaseException:
            os.close(self._read)
            os.close(write)
            raise

    def into(
        self,
        loader: tuple[tuple[str, ...], Mapping[str, str]] | None,
        *,
        algorithm: str = "sha256",
        timeout: float | None = None,
    ) -> StreamedRestore:
        """Stream the file into ``loader`` (argv, env), or only hash it when None.

        Returns the stream's digest and size and the loader's exit code and stderr
        tail. Raises :class:`ResticError` when restic could not deliver the file,
        ``FileNotFoundError`` when the loader is missing, :class:`process.ProcessStopped`
        when the loader timed out or the job was cancelled. Whatever happens, restic and the loader have ended
        when it returns or raises.
        """
        assert not self._taken, "a dump stream is read once"
        self._taken = True
        self._stall.restart()  # from now on it is read: bytes are due
        self._stall.expect_progress_within(self._stall_timeout)
        source = os.fdopen(self._read, "rb")  # closed below, whatever happens: restic gets a broken pipe
        load_write = -1
        loading: InThread[process.ProcessResult] | None = None

        def load(load_read: int) -> process.ProcessResult:
            assert loader is not None
            with os.fdopen(load_read, "rb") as stdin:
                return process.run_process(loader[0], env=loader[1], stdin=stdin, timeout=timeout)

        hasher = hashing.new_hasher(algorithm)
        size = 0
        try:
            if loader is not None:
                load_read, load_write = os.pipe()
                try:
                    loading = InThread(lambda: load(load_read), "loader")
                except BaseException:
                    os.close(load_read)
                    raise
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            loader_open = loading is not None
            while n := source.readinto(buffer):
                self._stall.progress()
                hasher.update(view[:n])
                size += n
                if loader_open:
                    try:
                        _write_all(load_write, view[:n])
                    except BrokenPipeError:
                        loader_open = False  # the loader gave up; keep hashing to judge the stored dump
        finally:
            if load_write >= 0:
                os.close(load_write)  # the loader's end of input, also when the stream broke off
            source.close()
            self._dumping.wait()
            if loading is not None:
                loading.wait()
        self._dumping.result()  # raises what restic raised
        digest = hashing.finish(algorithm, hasher)
        if loading is None:
            return StreamedRestore(digest, size, None, ())
        result = loading.result()  # raises what running the loader raised
        return StreamedRestore(digest, size, result.returncode, result.stderr_tail)

    def abandon(self) -> None:
        """Stop the dump unread (the verification ended before it was loaded) and wait for it; nothing once
        :meth:`into` took it."""
        if self._taken:
            return
        self._taken = True
        self._stop.cancel("the dump is no longer needed")
        os.close(self._read)  # a restic already writing gets a broken pipe
        self._dumping.wait()
