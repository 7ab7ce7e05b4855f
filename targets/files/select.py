"""Which paths of a files target are backed up.

The agent walks the configured paths itself and applies the exclude patterns;
the walk yields what the manifest covers and, as exact absolute paths, every
entry it left out. restic then walks the same roots itself with those exact
paths excluded (never with the patterns: restic's own exclude syntax is not
involved), so both see the same set; what changes between the two walks is found
afterwards, when restic's account of the snapshot is compared with the manifest.

Exclude patterns (shell globs, ``fnmatch``):

* ``*.tmp`` -- no slash: matches the name of a file or directory at any depth;
* ``cache/`` -- trailing slash: matches directories only, at any depth;
* ``logs/*.gz`` -- a slash inside: matches the path relative to the configured path;
* ``/srv/documents/old`` -- leading slash: matches the absolute path.
"""

from __future__ import annotations

import fnmatch
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


@dataclass(slots=True)
class WalkedStat:
    """What the walk's ``lstat`` said of an entry, as far as a manifest keeps it (read back from the walk kept on
    disk: ``targets/files/walkspill.py``). A value, though not declared frozen: a frozen dataclass's ``__init__``
    costs three times as much, and a backup makes one an entry (1.1 s of CPU a million)."""

    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_ino: int


Stat = os.stat_result | WalkedStat


@dataclass(slots=True)
class Found:
    """One path selected for backup with the ``lstat`` taken during the walk. A value, not declared frozen for
    the cost of a frozen ``__init__`` (a backup makes two an entry)."""

    path: str
    kind: str  # "file", "dir", "symlink"
    st: Stat


@dataclass
class Selection:
    """The result of walking a target's paths."""

    found: list[Found] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)
    skipped_special: list[tuple[str, str]] = field(default_factory=list)  # (path, what it is): not backed up
    # Every entry the walk left out (an exclude pattern, a never-path, a special file), as an absolute path:
    # restic excludes exactly these. Directories are named once; nothing below them is listed.
    excluded: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # the configured paths that exist, absolute

    @property
    def unprovable(self) -> set[str]:
        """Paths whose listing restic may report differently from the walk: what could not be read."""
        return {path for path, _ in self.unreadable_dirs}


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


def walk_order(path: str) -> str:
    """The sort key of the walk's order: a directory comes right before everything under it, each directory's
    names sorted ("/" is taken as the lowest character)."""
    return path.replace("/", "\0")


def select_paths(roots: Sequence[str], exclude: Sequence[str], never: Sequence[str] = ()) -> Selection:
    """Walk ``roots`` into a :class:`Selection` whose ``found`` lists every selected entry (see :func:`walk`)."""
    selection = Selection()
    selection.found = list(walk(roots, exclude, never, selection))
    return selection


def walk(roots: Sequence[str], exclude: Sequence[str], never: Sequence[str], selection: Selection) -> Iterator[Found]:
    """Walk ``roots`` (absolute paths), applying ``exclude``, without following symlinks.

    ``never`` lists absolute paths left out whatever the patterns say (the
    agent's own state directory).

    Yields every selected file, symlink and directory in walk order (:func:`walk_order`; a directory whose every
    entry was excluded is kept, as restic keeps it), holding only the directories on the way down. What was left
    out and what could not be walked goes into ``selection`` as the walk passes it. Never raises for a missing
    root or an unreadable directory: those are recorded for the result record.
    """
    patterns = [ExcludePattern.parse(p) for p in exclude]
    left_out = frozenset(os.path.abspath(p) for p in never)
    walked: list[str] = []
    for root in sorted({os.path.abspath(given) for given in roots}, key=walk_order):
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            selection.missing_roots.append(root)
            continue
        except OSError as exc:
            selection.unreadable_dirs.append((root, exc.strerror or str(exc)))
            continue
        selection.roots.append(root)
        if any(root.startswith(outer.rstrip("/") + "/") for outer in walked):
            continue  # inside a root already walked: each path once
        walked.append(root)
        yield from _walk(root, root, st, patterns, left_out, selection)


def _walk(
    root: str, path: str, st: os.stat_result, patterns: list[ExcludePattern], never: frozenset[str], out: Selection
) -> Iterator[Found]:
    """Depth first, each directory's names sorted, with a stack of the directories on the way down (a generator
    per directory cost a resumption per level for every entry yielded)."""
    found, listing = _visit(path, st, out)
    if found is not None:
        yield found
    cut = len(root.rstrip("/")) + 1  # os.path.relpath costs more than the walk itself
    stack = [iter(listing)] if listing is not None else []
    while stack:
        for entry_path, name in stack[-1]:
            try:
                child = os.lstat(entry_path)
            except FileNotFoundError:
                continue  # vanished between listing and stat: not in the backup
            except OSError as exc:  # e.g. a path longer than PATH_MAX: this one is not backed up, the rest is
                out.unreadable_dirs.append((entry_path, exc.strerror or str(exc)))
                continue
            if entry_path in never or (patterns and any(
                p.matches(entry_path, entry_path[cut:], name, stat.S_ISDIR(child.st_mode)) for p in patterns
            )):
                out.excluded.append(entry_path)
                continue
            found, below = _visit(entry_path, child, out)
            if found is not None:
                yield found
            if below is not None:
                stack.append(iter(below))
                break  # on into the directory; its parent's listing goes on where it stopped
        else:
            stack.pop()


def _visit(path: str, st: os.stat_result, out: Selection) -> tuple[Found | None, list[tuple[str, str]] | None]:
    """One entry the patterns kept: what the walk yields for it (None: left out, and ``out`` says why) and, for a
    directory that can be listed, its listing."""
    kind = _kind(st.st_mode)
    if kind is None:
        out.skipped_special.append((path, special_kind(st.st_mode)))
        out.excluded.append(path)
        return None, None
    if kind != "dir":
        return Found(path, kind, st), None
    try:
        listing = _sorted_listing(path)
    except OSError as exc:
        out.unreadable_dirs.append((path, exc.strerror or str(exc)))
        return None, None
    return Found(path, kind, st), listing


def _sorted_listing(path: str) -> list[tuple[str, str]]:
    """(path, name) of each entry of directory ``path``, by name. Raises OSError when it cannot be listed."""
    return sorted(_scan(path), key=lambda named: named[1])


def _scan(path: str) -> Iterator[tuple[str, str]]:
    with os.scandir(path) as it:
        for entry in it:
            yield entry.path, entry.name


def with_ancestors(path: str) -> set[str]:
    """``path`` and every directory above it, '/' excluded: what restic stores around a path it is given."""
    found = set()
    while path not in ("/", ""):
        found.add(path)
        path = os.path.dirname(path)
    return found
