"""Which files changed while restic read them, re-stat'ing only the files that can have.

The agent stats every entry in its walk before restic starts, then hashes the files -- or, in an incremental, keeps
the base manifest's hash because the walk's stat is the base's -- while restic reads the same files beside it, in
no set order. A file that changed after the walk's stat has, at the end, another stat than the manifest holds (any
change moves its ctime; a hashed file's entry holds the stat taken after its reading, and one that moved while it
was hashed is marked); re-stat'ing it after restic finds it, whichever of the two read it first. A file that did
not change since the walk was one version for both. Re-stat'ing *every*
entry reads the whole manifest back and stats every file again, however little changed. Two kinds of entry need it:

- the ones the agent read itself (hashed, or a symlink's target): its reading and restic's are two moments;
- the ones restic reports ``new`` or ``modified``: restic read them, at a moment of its own.

An entry that is neither was read by nobody: the agent kept the base manifest's hash (stat equal to the base
manifest's) and restic reported it ``unchanged``, which restic says of a file it did not read because its size,
mtime, ctime and inode are those the parent snapshot holds, from when the base backup read it (the parent *is* the
base: the agent passes ``--parent``, never ``--ignore-ctime`` or ``--ignore-inode``). Any change to a file since then
sets its ctime to the time of the change, later than the base backup, so the file did not change between the base
backup and restic's look at it now, and the agent's stat, taken before restic started, was that same version. (The full
re-stat rests on ctime just the same.) A full backup has no base, the agent reads every file, and
every entry is re-stat'ed.

Memory stays bounded: past :data:`KEPT` entries of either kind, the manifest is read back and every entry re-stat'ed,
as a full does.
"""

from __future__ import annotations

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

    def __init__(self, *, incremental: bool, kept: int = KEPT) -> None:
        self._kept = kept
        self._agent: dict[str, FileEntry] | None = {} if incremental else None
        self._restic: set[str] | None = set() if incremental else None

    def read_by_agent(self, entry: FileEntry) -> None:
        """An entry whose file (or symlink) the agent read itself, rather than keeping the base's hash."""
        if self._agent is None or entry.type == "dir":
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
            return sorted(find_changed_since(manifest))
        changed = set(find_changed_since(self._agent.values()))
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
