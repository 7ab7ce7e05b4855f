"""The files manifest: per path its type, size, mode, mtime and content hash.

Taken on the host at backup time, just before restic reads the same files, and
stored inside the same snapshot. A file
that is unchanged since the base manifest (same size, mtime, ctime and inode)
keeps its hash, so an incremental hashes only what changed; a full passes no
base and re-hashes everything. A file whose metadata moved between the walk
and the end of its hashing is marked ``changed_during_backup`` in the manifest;
one that moved after its hashing, while restic ran, is found by
:func:`find_changed_since` and named in the result record. Either way what
restic stored may differ from what was hashed, and verification reports it as
such instead of calling it corruption.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from targets import hashing
from targets.files.select import Found, Selection

CHUNK = 1 << 20
# Files hashed per task of the pool, unless they are large (a large file is a task of its own).
_BATCH_FILES = 256
_BATCH_BYTES = 4 << 20


class ManifestError(ValueError):
    """A stored manifest that does not parse or has the wrong schema."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One path of the manifest. ``hash`` is None for directories."""

    path: str
    type: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    hash: str | None
    changed_during_backup: bool = False

    def same_version(self, st: os.stat_result) -> bool:
        """Whether ``st`` describes the same version of the file as this entry."""
        return (
            st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and st.st_ctime_ns == self.ctime_ns
            and st.st_ino == self.inode
        )


@dataclass
class FilesManifest:
    """The manifest of one files backup; :mod:`targets.files.manifest_store` gives its stored bytes."""

    algorithm: str
    host: str
    policy: str
    target: str
    job_id: str
    level: str
    roots: list[str]
    exclude: list[str]
    entries: list[FileEntry] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    base_snapshot_id: str | None = None
    hashed_files: int = 0
    hashed_bytes: int = 0
    reused_hashes: int = 0

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.type == "file")

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.type == "file")

    @property
    def changed_during_backup(self) -> list[str]:
        return [e.path for e in self.entries if e.changed_during_backup]


def hash_file(path: str, algorithm: str) -> tuple[str, os.stat_result, os.stat_result]:
    """Hash a regular file; return the digest and its lstat before and fstat after reading.

    Raises OSError when the file cannot be opened or read.
    """
    before = os.lstat(path)
    hasher = hashing.new_hasher(algorithm)
    fd = _open_for_reading(path)
    try:
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as handle:
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while True:
                n = handle.readinto(buffer)
                if not n:
                    break
                hasher.update(view[:n])
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return hashing.finish(algorithm, hasher), before, after


def _open_for_reading(path: str) -> int:
    """A read-only descriptor of ``path`` (never through a symlink), without touching its access time where the
    kernel allows it. O_NOATIME is for the file's owner only: an agent reading other users' files through
    CAP_DAC_READ_SEARCH (as the packaged service does) gets EPERM for it, and opens the plain way."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(path, flags | noatime)
        except PermissionError as error:
            if error.errno != errno.EPERM:
                raise
    return os.open(path, flags)


def _hash_symlink(path: str, algorithm: str) -> str:
    return hashing.digest_bytes(algorithm, os.fsencode(os.readlink(path)))


def _entry(found: Found, st: os.stat_result, digest: str | None, changed: bool = False) -> FileEntry:
    return FileEntry(
        path=found.path,
        type=found.kind,
        size=st.st_size if found.kind != "dir" else 0,
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        hash=digest,
        changed_during_backup=changed,
    )


def _moved(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) != (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def build_entries(
    selection: Selection,
    algorithm: str,
    base: Mapping[str, FileEntry] | None,
    *,
    workers: int = 2,
    on_hashed: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[FileEntry], list[dict[str, str]], int, int, int]:
    """Hash every selected path, reusing ``base`` hashes for unchanged files.

    Returns (entries, unreadable, hashed_files, hashed_bytes, reused_hashes).
    A file that cannot be read is listed in ``unreadable`` with the reason and
    left out of the entries (restic cannot read it either). When ``should_stop``
    turns true the remaining files are skipped (the job is failing anyway).
    """
    results: dict[str, FileEntry] = {}
    unreadable: list[dict[str, str]] = []
    counters = {"files": 0, "bytes": 0, "reused": 0}
    lock = threading.Lock()

    prefix = algorithm + ":"

    def reusable(found: Found) -> FileEntry | None:
        previous = base.get(found.path) if base is not None else None
        if (
            previous is not None
            and previous.type == "file"
            and previous.hash is not None
            and not previous.changed_during_backup
            and previous.hash.startswith(prefix)
            and previous.same_version(found.st)
        ):
            return replace(previous, mode=stat.S_IMODE(found.st.st_mode))
        return None

    def one(found: Found) -> None:
        if should_stop is not None and should_stop():
            return
        try:
            if found.kind == "symlink":
                entry = _entry(found, found.st, _hash_symlink(found.path, algorithm))
            else:
                digest, before, after = hash_file(found.path, algorithm)
                changed = _moved(found.st, before) or _moved(before, after)
                entry = _entry(found, after, digest, changed)
                with lock:
                    counters["files"] += 1
                    counters["bytes"] += after.st_size
                if on_hashed is not None:
                    on_hashed(after.st_size)
        except FileNotFoundError:
            return  # vanished before we read it; restic reports it missing too
        except OSError as exc:
            with lock:
                unreadable.append({"path": found.path, "error": exc.strerror or str(exc)})
            return
        with lock:
            results[found.path] = entry

    def batch(group: list[Found]) -> None:
        for found in group:
            one(found)

    # Directories and unchanged files need no reading: done here. The rest goes to the pool in batches (one
    # task per file costs more than hashing a small file), the largest files first and alone, so that the
    # pool does not end on one big file.
    to_read: list[Found] = []
    for found in selection.found:
        if found.kind == "dir":
            results[found.path] = _entry(found, found.st, None)
        elif found.kind == "file" and (kept := reusable(found)) is not None:
            results[found.path] = kept
            counters["reused"] += 1
        else:
            to_read.append(found)
    to_read.sort(key=lambda f: f.st.st_size, reverse=True)
    groups: list[list[Found]] = []
    group_bytes = 0
    for found in to_read:
        if groups and len(groups[-1]) < _BATCH_FILES and group_bytes + found.st.st_size <= _BATCH_BYTES:
            groups[-1].append(found)
            group_bytes += found.st.st_size
        else:
            groups.append([found])
            group_bytes = found.st.st_size
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(batch, groups))
    entries = [results[f.path] for f in selection.found if f.path in results]
    unreadable.sort(key=lambda u: u["path"])
    return entries, unreadable, counters["files"], counters["bytes"], counters["reused"]


def find_changed_since(entries: Iterable[FileEntry]) -> list[str]:
    """Re-stat every entry after restic finished; return the paths that moved since hashing.

    Entries already marked ``changed_during_backup`` are included; a file deleted
    in the meantime is too (restic may or may not have it).
    """
    changed = []
    for entry in entries:
        if entry.type == "dir":
            continue
        if entry.changed_during_backup:
            changed.append(entry.path)
            continue
        try:
            st = os.lstat(entry.path)
            moved = (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != (entry.size, entry.mtime_ns, entry.ctime_ns)
        except FileNotFoundError:
            moved = True
        if moved:
            changed.append(entry.path)
    return changed


def index_entries(entries: Sequence[FileEntry]) -> dict[str, FileEntry]:
    """Entries by path, for reuse as a base."""
    return {e.path: e for e in entries}
