"""Streaming a dump out of restic into a loader (pg_restore, the mariadb client), hashing it on the way.

The mirror image of ``dumpstream``: ``restic dump`` writes the stored file to a
pipe, the agent hashes every byte and passes it to the loader's stdin. No copy of
the dump touches the scratch disk. If the loader gives up early, the rest of the
stream is still read and hashed, so the digest tells whether the stored dump
itself is intact -- which decides between "the backup is bad" and "the scratch
side could not take it".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from agents import process
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


def stream_restore(
    restic: Restic,
    snapshot_id: str,
    path: str,
    loader: tuple[tuple[str, ...], Mapping[str, str]] | None,
    *,
    algorithm: str = "sha256",
    timeout: float | None = None,
) -> StreamedRestore:
    """Stream ``path`` of ``snapshot_id`` into ``loader`` (argv, env), or only hash it when None.

    Returns the stream's digest and size and the loader's exit code and stderr
    tail. Raises :class:`ResticError` when restic could not deliver the file,
    ``FileNotFoundError`` when the loader is missing, :class:`process.ProcessStopped`
    when the loader timed out or the job was cancelled.
    """
    stall = process.StallWatch(restic.repository.stall_timeout)
    dump_read, dump_write = os.pipe()
    load_read, load_write = (os.pipe() if loader is not None else (-1, -1))
    outcome: dict[str, object] = {}

    def dump() -> None:
        with os.fdopen(dump_write, "wb") as out:
            try:
                restic.dump_to(snapshot_id, path, out, stall)
            except BaseException as error:
                outcome["restic"] = error

    def load() -> None:
        assert loader is not None
        with os.fdopen(load_read, "rb") as stdin:
            try:
                outcome["loader"] = process.run_process(loader[0], env=loader[1], stdin=stdin, timeout=timeout)
            except BaseException as error:
                outcome["loader_error"] = error

    threads = [threading.Thread(target=dump, name="restic-dump", daemon=True)]
    if loader is not None:
        threads.append(threading.Thread(target=load, name="loader", daemon=True))
    for thread in threads:
        thread.start()
    hasher = hashing.new_hasher(algorithm)
    size = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    loader_open = loader is not None
    with os.fdopen(dump_read, "rb") as source:
        while True:
            n = source.readinto(buffer)
            if not n:
                break
            stall.progress()
            hasher.update(view[:n])
            size += n
            if loader_open:
                try:
                    _write_all(load_write, view[:n])
                except BrokenPipeError:
                    loader_open = False  # the loader gave up; keep hashing to judge the stored dump
    if loader is not None:
        os.close(load_write)
    for thread in threads:
        thread.join()
    if "restic" in outcome:
        error = outcome["restic"]
        assert isinstance(error, BaseException)
        raise error
    if "loader_error" in outcome:
        error = outcome["loader_error"]
        assert isinstance(error, BaseException)
        raise error
    result = outcome.get("loader")
    digest = hashing.finish(algorithm, hasher)
    if result is None:
        return StreamedRestore(digest, size, None, ())
    assert isinstance(result, process.ProcessResult)
    return StreamedRestore(digest, size, result.returncode, result.stderr_tail)

