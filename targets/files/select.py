"""Which paths of a files target are backed up.

The agent walks the configured paths itself, applies the exclude patterns and
hands restic the resulting list, so the manifest and the snapshot cover the same
set by construction (restic's own exclude syntax is never involved).

Exclude patterns (shell globs, ``fnmatch``):

* ``*.tmp`` -- no slash: matches the name of a file or directory at any depth;
* ``cache/`` -- trailing slash: matches directories only, at any depth;
* ``logs/*.gz`` -- a slash inside: matches the path relative to the configured path;
* ``/srv/documents/old`` -- leading slash: matches the absolute path.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExcludePattern:
    pattern: str
    dirs_only: bool
    anchored: bool  # matched against the relative (or absolute) path, not the name
    absolute: bool

    @classmethod
    def parse(cls, text: str) -> ExcludePattern:
        dirs_only = text.endswith("/")
        body = text.rstrip("/") or "/"
        return cls(body, dirs_only, "/" in body, body.startswith("/"))

    def matches(self, absolute: str, relative: str, name: str, is_dir: bool) -> bool:
        if self.dirs_only and not is_dir:
            return False
        if self.absolute:
            return fnmatch.fnmatchcase(absolute, self.pattern)
        if self.anchored:
            return fnmatch.fnmatchcase(relative, self.pattern)
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class Found:
    """One path selected for backup with the ``lstat`` taken during the walk."""

    path: str
    kind: str  # "file", "dir", "symlink"
    st: os.stat_result
    empty_dir: bool = False  # a directory with nothing in it on disk


@dataclass
class Selection:
    """The result of walking a target's paths."""

    found: list[Found] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)
    skipped_special: list[tuple[str, str]] = field(default_factory=list)  # (path, what it is): not backed up

    def restic_paths(self) -> list[bytes]:
        """The paths restic is given: files, symlinks and empty directories.

        Non-empty directories are not listed (restic would recurse into them and
        pick up excluded entries); they appear in the snapshot as parents.
        """
        return [os.fsencode(f.path) for f in self.found if f.kind != "dir" or f.empty_dir]


_SPECIAL = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"))


def special_kind(mode: int) -> str:
    """What a file that is neither a regular file, a directory nor a symlink is, in words."""
    return next((name for test, name in _SPECIAL if test(mode)), "special file")


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


def select_paths(roots: Sequence[str], exclude: Sequence[str], never: Sequence[str] = ()) -> Selection:
    """Walk ``roots`` (absolute paths), applying ``exclude``, without following symlinks.

    ``never`` lists absolute paths left out whatever the patterns say (the
    agent's own state directory).

    Returns every selected file, symlink and directory (sorted by path) and what
    could not be walked. Never raises for a missing root or an unreadable
    directory: those are recorded for the result record.
    """
    patterns = [ExcludePattern.parse(p) for p in exclude]
    patterns += [ExcludePattern(glob.escape(os.path.abspath(p)), False, True, True) for p in never]
    selection = Selection()
    for given in roots:
        root = os.path.abspath(given)
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            selection.missing_roots.append(root)
            continue
        except OSError as exc:
            selection.unreadable_dirs.append((root, exc.strerror or str(exc)))
            continue
        _walk(root, root, st, patterns, selection)
    selection.found = _drop_hollow_dirs(selection.found)
    return selection


def _drop_hollow_dirs(found: list[Found]) -> list[Found]:
    """Remove directories whose every entry was excluded: restic will not store them.

    Deepest paths first, so a directory holding only hollow directories goes too.
    """
    has_kept_child: set[str] = set()
    kept: list[Found] = []
    for item in sorted(found, key=lambda f: f.path.count(os.sep), reverse=True):
        if item.kind != "dir" or item.empty_dir or item.path in has_kept_child:
            kept.append(item)
            has_kept_child.add(os.path.dirname(item.path))
    kept.sort(key=lambda f: f.path)
    return kept


def _walk(root: str, path: str, st: os.stat_result, patterns: list[ExcludePattern], out: Selection) -> None:
    kind = _kind(st.st_mode)
    if kind is None:
        out.skipped_special.append((path, special_kind(st.st_mode)))
        return
    if kind != "dir":
        out.found.append(Found(path, kind, st))
        return
    try:
        entries = list(_scan(path))
    except OSError as exc:
        out.unreadable_dirs.append((path, exc.strerror or str(exc)))
        return
    out.found.append(Found(path, kind, st, empty_dir=not entries))
    for entry_path, name in entries:
        try:
            child = os.lstat(entry_path)
        except FileNotFoundError:
            continue  # vanished between listing and stat: not in the backup
        except OSError as exc:  # e.g. a path longer than PATH_MAX: this one is not backed up, the rest is
            out.unreadable_dirs.append((entry_path, exc.strerror or str(exc)))
            continue
        relative = os.path.relpath(entry_path, root)
        is_dir = stat.S_ISDIR(child.st_mode)
        if any(p.matches(entry_path, relative, name, is_dir) for p in patterns):
            continue
        _walk(root, entry_path, child, patterns, out)


def _scan(path: str) -> Iterator[tuple[str, str]]:
    with os.scandir(path) as it:
        for entry in it:
            yield entry.path, entry.name
