"""Which files changed while restic read them, re-stat'ing only the files that can have.

The agent hashes a file -- or, in an incremental, keeps the base manifest's hash because the file's stat is the
base's -- while restic reads the same files beside it. A file the agent read first that changed before restic read
it has one version in the manifest and another in the snapshot; re-stat'ing it after restic, against the stat the
manifest holds, finds it. Re-stat'ing *every*
entry reads the whole manifest back and stats every file again, however little changed. Two kinds of entry need it:

- the ones the agent read itself (hashed, or a symlink's target): its reading and restic's are two moments;
- the ones restic reports ``new`` or ``modified``: restic read them, at a moment of its own.

An entry that is neither was read by nobody: the agent kept the base manifest's hash (stat equal to the base
manifest's) and restic reported it ``unchanged``, which restic says of a file it did not read because its size,
mtime, ctime and inode are those the parent snapshot holds, from when the base backup read it (the parent *is* the
base: the agent passes ``--parent``, never ``--ignore-ctime`` or ``--ignore-inode``). Any change to a file since then
sets its ctime to the time of the change, later than the base backup, so the file did not change between the base
backup and either look at it now, whichever came first: both saw the base's version. (The full
re-stat rests on ctime just the same.) A full backup has no base, the agent reads every file, and
every entry is re-stat'ed.

Memory stays bounded: past :data:`KEPT` entries of either kind, the manifest is read back and every entry re-stat'ed,
as a full does.

The agent's reading and restic's run side by side, in no set order, so the re-stat alone cannot see a file that
changed after restic read it and before the agent did: the manifest then holds the later version, whose stat is
still the file's at the end. Any change sets a file's ctime to the time of the change, so the agent takes the file
system's clock before restic starts (:func:`file_system_clock`) and names every entry it read whose ctime is at or
after that moment: it changed while the backup ran (or in the same clock tick just before: named, never missed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from agents.jobs.snapshot_proof import comparable_path
from agents.restic.messages import BackupItem
from targets.files.manifest import FileEntry, find_changed_since

# Entries of each kind kept for the re-stat; more, and the whole manifest is re-stat'ed instead.
KEPT = 50_000


class ReadSinceBase:
    """The entries that may have changed between the agent's reading and restic's, gathered as the manifest is
    written (:meth:`read_by_agent`) and as restic reports what it stored (:meth:`reported_by_restic`).

    ``incremental`` False (a full): nothing is kept -- every entry is re-stat'ed.
    """

    def __init__(self, *, incremental: bool, started_ns: int | None = None, kept: int = KEPT) -> None:
        """``started_ns``: the file system's clock before restic started (:func:`file_system_clock`); None when
        the agent read every file before restic started."""
        self._kept = kept
        self._agent: dict[str, FileEntry] | None = {} if incremental else None
        self._restic: set[str] | None = set() if incremental else None
        self._started_ns = started_ns
        self._since_start: set[str] = set()

    def read_by_agent(self, entry: FileEntry) -> None:
        """An entry whose file (or symlink) the agent read itself, rather than keeping the base's hash."""
        if entry.type == "dir":
            return
        if self._started_ns is not None and entry.ctime_ns >= self._started_ns:
            self._since_start.add(entry.path)
        if self._agent is None:
            return
        if len(self._agent) >= self._kept:
            self._agent = None
            return
        self._agent[entry.path] = entry

    def reported_by_restic(self, item: BackupItem, path: str) -> None:
        """A file restic stored (``path`` as the proof names it); kept unless restic says it is ``unchanged``."""
        if self._restic is None or item.action == "unchanged" or item.item.endswith("/"):
            return
        if len(self._restic) >= self._kept:
            self._restic = None
            return
        self._restic.add(path)

    def find_changed(self, manifest: Iterable[FileEntry]) -> list[str]:
        """The paths that moved since the manifest's stat, sorted. ``manifest`` (a re-readable stream of the stored
        entries) is iterated only when needed: a full, too many entries kept, or a file only restic read.

        Raises what reading the manifest raises (:class:`targets.files.manifest.ManifestError`, OSError).
        """
        if self._agent is None or self._restic is None:
            return sorted(self._since_start.union(find_changed_since(manifest)))
        changed = self._since_start.union(find_changed_since(self._agent.values()))
        # restic names a path that is not UTF-8 with U+FFFD for each odd byte, so two such paths can share a
        # name: only a path restic prints as it is can tell that restic's report is about the agent's own entry.
        read_by_agent = {path for path in self._agent if comparable_path(path) == path}
        only_restic = self._restic - read_by_agent
        if only_restic:  # kept by the agent from the base, read anew by restic: the manifest's stat is needed
            changed.update(find_changed_since(
                entry for entry in manifest
                if entry.type != "dir" and entry.path not in self._agent and comparable_path(entry.path) in only_restic
            ))
        return sorted(changed)



def file_system_clock(folder: str, name: str) -> int:
    """The time, in ns, the file system gives a change made now: the ctime of a file made and removed in
    ``folder`` under ``name``. A file changed from now on has a ctime at least this (the kernel stamps changes
    from one clock, which never goes back while the machine's time is not set back). Raises OSError."""
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
        os.unlink(path)
