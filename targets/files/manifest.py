"""The files manifest: per path its type, size, mode, mtime and content hash.

Taken on the host at backup time: every entry stat'ed before restic starts, the
files hashed while restic reads them, the manifest stored in a snapshot of its own
beside theirs. A file
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from targets import hashing
from targets.files.select import Found, Selection, Stat, walk_order

CHUNK = 1 << 20
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
# A file smaller than this is hashed on the walking thread; larger ones on the pool's (see map_by_size).
_INLINE_BYTES = 256 << 10
# Bytes hashed per task of the pool (only files of _INLINE_BYTES or more go there: at most 16 a task); a file
# larger than this is a task of its own.
_BATCH_BYTES = 4 << 20
# Streams are hashed a window at a time: this many entries, or this many bytes to read (whichever comes first).
_WINDOW_FILES = 8192
_WINDOW_BYTES = 256 << 20


class ManifestError(ValueError):
    """A stored manifest that does not parse or has the wrong schema."""


@dataclass(slots=True)
class FileEntry:
    """One path of the manifest. ``hash`` is None for directories.

    Treated as a value: nothing changes an entry once made (``dataclasses.replace`` makes another). Not declared
    frozen because a backup makes one or two a file, and a frozen dataclass's ``__init__`` (a
    ``object.__setattr__`` a field) costs five times as much: 2 s a million files.
    """

    path: str
    type: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    hash: str | None
    changed_during_backup: bool = False

    def same_version(self, st: Stat) -> bool:
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


def hash_file(path: str, algorithm: str) -> tuple[str, os.stat_result]:
    """Hash a regular file; return the digest and its fstat after reading.

    Raises OSError when the file cannot be opened or read.
    """
    hasher = hashing.new_hasher(algorithm)
    buffer, view = _read_buffer()
    fd = _open_for_reading(path)
    try:
        while n := os.readv(fd, (buffer,)):
            hasher.update(view[:n])
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return hashing.finish(algorithm, hasher), after


_buffers = threading.local()


def _read_buffer() -> tuple[bytearray, memoryview]:
    """This thread's read buffer, made once: a fresh zeroed megabyte for each file cost three times what hashing
    a small file does."""
    made: tuple[bytearray, memoryview] | None = getattr(_buffers, "made", None)
    if made is None:
        buffer = bytearray(CHUNK)
        made = _buffers.made = (buffer, memoryview(buffer))
    return made


def _open_for_reading(path: str) -> int:
    """A read-only descriptor of ``path`` (never through a symlink), without touching its access time where the
    kernel allows it. O_NOATIME is for the file's owner only: an agent reading other users' files through
    CAP_DAC_READ_SEARCH (as the packaged service does) gets EPERM for it, and opens the plain way.

    O_NONBLOCK: a path swapped for a FIFO after the walk must not stall the job on opening or reading it (for a
    regular file the flag changes nothing); what is read then is not what the walk saw, and the stat says so."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
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


def _entry(found: Found, st: Stat, digest: str | None, changed: bool = False) -> FileEntry:
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


def _moved(a: Stat, b: Stat) -> bool:
    """Whether ``b`` is another version of the file than ``a``: any write, and a rename over its path, moves the
    ctime. Not the inode: some filesystems (FUSE without ``use_ino``, CIFS with ``noserverino``) give a file
    another one when the kernel forgets it, and a false mark would excuse a real difference at verification."""
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) != (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


class BaseEntries(Protocol):
    """The base manifest's entries, looked up by path (a mapping, or a :class:`BaseCursor` in walk order)."""

    def get(self, path: str, /) -> FileEntry | None: ...


class BaseCursor:
    """A base manifest's entries, read as a stream in walk order and looked up in that order: memory stays flat.

    A path asked for out of order is simply not found (its file is hashed again): never a wrong reuse.
    """

    def __init__(self, entries: Iterable[FileEntry]) -> None:
        self._entries = iter(entries)
        self._current: FileEntry | None = next(self._entries, None)

    def get(self, path: str, /) -> FileEntry | None:
        current = self._current
        if current is not None and current.path != path:
            key = walk_order(path)  # only off the usual step: the tree as it was, walked in the same order
            while current is not None and walk_order(current.path) < key:
                current = next(self._entries, None)
        if current is None or current.path != path:
            self._current = current
            return None
        self._current = next(self._entries, None)
        return current


@dataclass
class HashCounts:
    """What :func:`stream_entries` did, filled in as it goes."""

    hashed_files: int = 0
    hashed_bytes: int = 0
    reused: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)


def build_entries(
    selection: Selection, algorithm: str, base: BaseEntries | None, *, workers: int = 2
) -> tuple[list[FileEntry], list[dict[str, str]], int, int, int]:
    """:func:`stream_entries` of a whole selection, into a list.

    Returns (entries, unreadable, hashed_files, hashed_bytes, reused_hashes).
    """
    counts = HashCounts()
    entries = list(stream_entries(selection.found, algorithm, base, counts, workers=workers))
    return entries, sorted(counts.unreadable, key=lambda u: u["path"]), counts.hashed_files, counts.hashed_bytes, \
        counts.reused


def stream_entries(
    found: Iterable[Found],
    algorithm: str,
    base: BaseEntries | None,
    counts: HashCounts,
    *,
    workers: int = 2,
    on_read: Callable[[FileEntry], None] | None = None,
) -> Iterator[FileEntry]:
    """Hash every found path, in order, reusing ``base`` hashes for unchanged files; yield their entries.

    ``on_read`` is given each entry whose file (or symlink) was read here rather than kept from ``base``.

    The walk is taken a window at a time (:data:`_WINDOW_FILES` entries or :data:`_WINDOW_BYTES` to read), so
    memory holds one window however many files there are. A file that cannot be read is added to
    ``counts.unreadable`` with the reason and left out of the entries (restic cannot read it either).
    """
    prefix = algorithm + ":"

    def reusable(item: Found) -> FileEntry | None:
        previous = base.get(item.path) if base is not None else None
        if (
            previous is not None
            and previous.type == "file"
            and previous.hash is not None
            and not previous.changed_during_backup
            and previous.hash.startswith(prefix)
            and previous.same_version(item.st)
        ):
            mode = stat.S_IMODE(item.st.st_mode)
            return previous if previous.mode == mode else replace(previous, mode=mode)
        return None

    def one(item: Found) -> FileEntry | dict[str, str] | None:
        try:
            if item.kind == "symlink":
                return _entry(item, item.st, _hash_symlink(item.path, algorithm))
            # The walk's lstat is the "before": a file that moved between the walk and the end of its reading
            # is marked, whenever in that span it moved.
            digest, after = hash_file(item.path, algorithm)
            return _entry(item, after, digest, _moved(item.st, after))
        except FileNotFoundError:
            return None  # vanished before we read it; restic reports it missing too
        except OSError as exc:
            return {"path": item.path, "error": exc.strerror or str(exc)}

    def window(items: list[Found], pool: ThreadPoolExecutor) -> Iterator[FileEntry]:
        done: dict[str, FileEntry] = {}
        to_read: list[Found] = []
        for item in items:
            if item.kind == "dir":
                done[item.path] = _entry(item, item.st, None)
            elif item.kind == "file" and (kept := reusable(item)) is not None:
                done[item.path] = kept
                counts.reused += 1
            else:
                to_read.append(item)
        for result in map_by_size(pool, one, to_read, lambda f: f.st.st_size):
            if isinstance(result, FileEntry):
                done[result.path] = result
                if on_read is not None:
                    on_read(result)
                if result.type == "file":
                    counts.hashed_files += 1
                    counts.hashed_bytes += result.size
            elif result is not None:
                counts.unreadable.append(result)
        for item in items:
            if (entry := done.get(item.path)) is not None:
                yield entry

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for items in in_windows(found, lambda item: item.st.st_size if item.kind == "file" else 0):
            yield from window(items, pool)


def in_windows(items: Iterable[_Item], size: Callable[[_Item], int]) -> Iterator[list[_Item]]:
    """``items`` in order, a window at a time: at most :data:`_WINDOW_FILES` items or :data:`_WINDOW_BYTES` of
    ``size`` -- what a stream holds at once, however long it is."""
    window: list[_Item] = []
    window_bytes = 0
    for item in items:
        window.append(item)
        window_bytes += size(item)
        if len(window) >= _WINDOW_FILES or window_bytes >= _WINDOW_BYTES:
            yield window
            window, window_bytes = [], 0
    if window:
        yield window


def map_by_size(
    pool: ThreadPoolExecutor, work: Callable[[_Item], _Result], items: Sequence[_Item], size: Callable[[_Item], int]
) -> list[_Result]:
    """``work(item)`` for each of ``items``, the results in their order.

    Items of :data:`_INLINE_BYTES` or more go to ``pool`` (in batches, the largest first, so that it does not end
    on one big file): hashing them releases the interpreter lock, so the threads read and hash side by side.
    The rest are done meanwhile on the calling thread: a small file costs less to read than handing it to
    another thread does (three threads contending for the lock made a walk of small files twice as slow).
    """
    large = sorted((i for i, item in enumerate(items) if size(item) >= _INLINE_BYTES),
                   key=lambda i: size(items[i]), reverse=True)
    groups = in_batches(large, lambda i: size(items[i]))
    futures = [pool.submit(lambda group: [work(items[i]) for i in group], group) for group in groups]
    try:
        results: dict[int, _Result] = {i: work(item) for i, item in enumerate(items) if size(item) < _INLINE_BYTES}
        for group, future in zip(groups, futures, strict=True):
            results.update(zip(group, future.result(), strict=True))
    finally:
        for future in futures:  # after a failure here or there, what has not started never does
            future.cancel()
    return [results[i] for i in range(len(items))]


def in_batches(items: Sequence[_Item], size: Callable[[_Item], int]) -> list[list[_Item]]:
    """``items`` in order, grouped for a thread pool (a task per small file costs more than hashing it): at most
    :data:`_BATCH_BYTES` a group; an item larger than that is a group of its own."""
    groups: list[list[_Item]] = []
    group_bytes = 0
    for item in items:
        item_bytes = size(item)
        if groups and group_bytes + item_bytes <= _BATCH_BYTES:
            groups[-1].append(item)
            group_bytes += item_bytes
        else:
            groups.append([item])
            group_bytes = item_bytes
    return groups


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
