"""Comparing a restored files snapshot with its manifest.

Given the manifest taken at backup time and the directory a snapshot was
restored into (restic puts each absolute path under it), every entry is looked
up, its type, size, mode and mtime compared and its content re-hashed with the
manifest's algorithm. Each difference is a typed finding; an entry the backup
saw changing (``changed``) that differs is reported as ``changed_during_backup``
-- expected, not corruption.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from targets import hashing
from targets.files.manifest import FileEntry, FilesManifest, hash_file, in_windows, map_by_size
from targets.files.select import walk_order, with_ancestors


@dataclass(frozen=True)
class Difference:
    code: str  # missing, unexpected, content_mismatch, type_mismatch, size_mismatch, mode_mismatch,
    #            mtime_mismatch, changed_during_backup
    path: str
    detail: str


@dataclass
class Comparison:
    differences: list[Difference] = field(default_factory=list)
    files_compared: int = 0
    bytes_compared: int = 0

    @property
    def failures(self) -> list[Difference]:
        return [d for d in self.differences if d.code != "changed_during_backup"]


def _restored(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


class _Confinement:
    """Whether paths of a restored tree lead out of its ``root`` through a symlinked directory.

    Each directory's answer is remembered: resolving a path stats each of its components (≈ 80 µs a file, more
    than all the rest of comparing a small file), and a file's siblings share its answer. Ask only of a finished
    restore, which nothing rearranges while it is compared."""

    _REMEMBERED = 65_536  # directories; forgotten all at once beyond, so memory stays bounded

    def __init__(self, root: str) -> None:
        self._top = os.path.realpath(root)
        self._known: dict[str, bool] = {}

    def leads_outside(self, where: str) -> bool:
        """Whether ``where``'s directory, symlinks resolved, is neither the root nor under it."""
        parent = os.path.dirname(where)
        known = self._known.get(parent)
        if known is None:
            real = os.path.realpath(parent)
            known = real != self._top and not real.startswith(self._top + os.sep)
            if len(self._known) >= self._REMEMBERED:
                self._known.clear()
            self._known[parent] = known
        return known


def _compare_entry(entry: FileEntry, root: str, algorithm: str,
                   confinement: _Confinement) -> tuple[Difference | None, int, int]:
    """One entry against what was restored: its difference (or None), and the files and bytes compared."""
    where = _restored(root, entry.path)
    if confinement.leads_outside(where):
        return Difference("unsafe_path", entry.path, "its directory in the restored snapshot is a symlink leading "
                          "out of the scratch directory: not followed"), 0, 0
    try:
        st = os.lstat(where)
    except (FileNotFoundError, NotADirectoryError):  # not there, or a directory above it restored as a file
        return Difference("missing", entry.path, "in the manifest, not in the restored snapshot"), 0, 0
    except OSError as error:  # a directory above it is a symlink that cannot be followed (a loop)
        return Difference("unsafe_path", entry.path, f"cannot be reached in the restored snapshot: {error.strerror}"), \
            0, 0
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else (
        "file" if stat.S_ISREG(st.st_mode) else "other")
    if kind != entry.type:
        return Difference("type_mismatch", entry.path, f"manifest says {entry.type}, restored is {kind}"), 0, 0
    if kind == "dir":
        return None, 0, 0
    if kind == "symlink":
        digest = hashing.digest_bytes(algorithm, os.fsencode(os.readlink(where)))
        return (None if digest == entry.hash else Difference("content_mismatch", entry.path, "symlink target differs"),
                0, 0)
    if st.st_size != entry.size:
        return Difference("size_mismatch", entry.path, f"manifest {entry.size} bytes, restored {st.st_size}"), 1, \
            st.st_size
    digest, _ = hash_file(where, algorithm)
    if digest != entry.hash:
        return Difference("content_mismatch", entry.path, f"manifest {entry.hash}, restored {digest}"), 1, st.st_size
    mode = stat.S_IMODE(st.st_mode)
    if mode != entry.mode:
        return Difference("mode_mismatch", entry.path, f"manifest {entry.mode:o}, restored {mode:o}"), 1, st.st_size
    if st.st_mtime_ns != entry.mtime_ns:
        return Difference("mtime_mismatch", entry.path, f"manifest {entry.mtime_ns}, restored {st.st_mtime_ns}"), 1, \
            st.st_size
    return None, 1, st.st_size


def compare_restored(
    manifest: FilesManifest, root: str, *, changed: Collection[str] = (), ignore: Collection[str] = ()
) -> Comparison:
    """Compare the tree restored under ``root`` with a manifest held in memory (in any order); see
    :func:`compare_stream`."""
    entries = sorted(manifest.entries, key=lambda e: walk_order(e.path))
    return compare_stream(entries, manifest.algorithm, manifest.roots, root, changed=changed, ignore=ignore)


def compare_stream(
    entries: Iterable[FileEntry],
    algorithm: str,
    roots: Sequence[str],
    root: str,
    *,
    changed: Collection[str] = (),
    ignore: Collection[str] = (),
    workers: int = 2,
) -> Comparison:
    """Compare the tree restored under ``root`` with manifest ``entries`` given in walk order.

    ``roots``: the target's configured paths (the directories above them are restored too, and are not data).
    ``changed``: paths the backup record names as changed while restic read them.
    ``ignore``: absolute paths in the snapshot that are not data (the manifest file itself).
    Files are hashed a window at a time on ``workers`` threads; the restored tree is walked beside the entries,
    in the same order, to find what the manifest does not list: memory does not grow with the number of files.
    """
    result = Comparison()
    around = set().union(*(with_ancestors(os.path.dirname(os.path.abspath(r))) for r in roots),
                         *(with_ancestors(path) for path in ignore))
    walker = _RestoredWalk(root, around, changed, result)
    confinement = _Confinement(root)  # the restore is over: nothing rearranges the tree while it is compared

    def compare(entry: FileEntry) -> tuple[Difference | None, int, int]:
        return _compare_entry(entry, root, algorithm, confinement)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for window in in_windows(entries, lambda entry: entry.size):
            for entry in window:
                walker.reach(entry.path)
            outcomes = map_by_size(pool, compare, window, lambda entry: entry.size)
            for entry, (found, files, size) in zip(window, outcomes, strict=True):
                result.files_compared += files
                result.bytes_compared += size
                if found is not None:
                    result.differences.append(_as_expected(found, entry, changed))
    walker.finish()
    return result


def _as_expected(difference: Difference, entry: FileEntry, changed: Collection[str]) -> Difference:
    """A difference of an entry the backup saw changing is ``changed_during_backup``: expected, not corruption."""
    if entry.changed_during_backup or entry.path in changed:
        return Difference("changed_during_backup", entry.path, difference.detail)
    return difference


class _RestoredWalk:
    """The restored tree, walked in walk order beside the manifest's entries; what the manifest does not list is
    reported ``unexpected`` (``changed_during_backup`` when the record names it), but for the directories
    ``around`` the data. Symlinks are never followed."""

    def __init__(self, root: str, around: set[str], changed: Collection[str], result: Comparison) -> None:
        self._root = root
        self._paths = self._walk(root, "")
        self._current = next(self._paths, None)
        self._around = around
        self._changed = changed
        self._result = result

    def reach(self, path: str) -> None:
        """Report what the walk finds before ``path``, a manifest entry (and pass over ``path`` itself)."""
        key = walk_order(path)
        while self._current is not None and walk_order(self._current) < key:
            self._unexpected(self._current)
            self._current = next(self._paths, None)
        if self._current == path:
            self._current = next(self._paths, None)

    def finish(self) -> None:
        while self._current is not None:
            self._unexpected(self._current)
            self._current = next(self._paths, None)

    def _unexpected(self, path: str) -> None:
        if path in self._around:
            return
        code = "changed_during_backup" if path in self._changed else "unexpected"
        self._result.differences.append(Difference(code, path, "in the restored snapshot, not in the manifest"))

    def _walk(self, directory: str, prefix: str) -> Iterator[str]:
        with os.scandir(directory) as listing:
            children = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
        for name, is_dir in children:
            path = f"{prefix}/{name}"
            yield path
            if is_dir:
                yield from self._walk(os.path.join(directory, name), path)
