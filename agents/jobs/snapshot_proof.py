"""Proving that a files snapshot holds what its manifest lists.

restic walks the target's roots itself, after the agent's own walk (whose
entries the manifest lists), so a file created or removed in between is in one
and not the other. While restic runs it reports every file and directory it stores
(``-vv``); :class:`SnapshotAccount` folds that stream into a count and an
order-independent digest (a sum of per-entry hashes), so memory stays flat
however many files there are. :func:`prove` folds the manifest the same way:
equal folds mean the same set of entries. Only when they differ are both sides
read into sets, from the spilled stream, to name the paths -- which the backup
then reports as changed while it ran.

restic does not report symlinks (nor other node types), so the proof covers
regular files and directories; symlinks are proven when a restore is verified.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from agents.restic.messages import BackupItem
from targets.files.manifest import FileEntry

_MODULUS = 1 << 128
_REPORTED = ("file", "dir")  # the kinds restic's -vv stream reports (not symlinks)


def _entry_hash(kind: str, path: str) -> int:
    data = f"{kind}\0{path}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def _one_replacement_per_byte(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd" * (error.end - error.start), error.end


# Go's JSON encoder replaces each byte that is not part of valid UTF-8 with its own U+FFFD; Python's "replace"
# gives one U+FFFD for a truncated sequence of several bytes ("\xe2\x82" is two to restic, one to Python).
codecs.register_error("drill-replace-per-byte", _one_replacement_per_byte)


def comparable_path(path: str) -> str:
    """A manifest path as restic's JSON prints it: each byte that is not UTF-8 becomes its own U+FFFD."""
    if path.isascii():
        return path  # most are: no bytes that are not UTF-8 (those are held as surrogates, never ASCII)
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "drill-replace-per-byte")


@dataclass
class Fold:
    """A set of (kind, path) entries as a count and the sum of their hashes."""

    count: int = 0
    digest: int = 0

    def add(self, kind: str, path: str) -> None:
        self.count += 1
        self.digest = (self.digest + _entry_hash(kind, path)) % _MODULUS

    def take(self, entry: FileEntry) -> None:
        """Fold a manifest entry as restic would report it. Entries the walk could not read are never in a
        manifest, so nothing here is unprovable."""
        if entry.type in _REPORTED:
            self.add(entry.type, comparable_path(entry.path))


@dataclass
class SnapshotAccount:
    """restic's stream of stored entries under ``roots``, folded; ``spill`` keeps them to name differences.

    ``ignore``: paths that are not the target's data (the staged manifest and its directories).
    ``also``: given each item that is the target's data, with its path as folded (a directory's without the '/').
    """

    roots: Sequence[str]
    ignore: Collection[str]
    spill: IO[bytes]
    also: Callable[[BackupItem, str], None] | None = None
    fold: Fold = field(default_factory=Fold)

    def __post_init__(self) -> None:
        # Asked of every file restic reports: the roots and what starts everything below them, made once.
        self._roots = frozenset(self.roots)
        self._below_roots = tuple(root.rstrip("/") + "/" for root in self.roots)

    def take(self, item: BackupItem) -> None:
        is_dir = item.item.endswith("/") and item.item != "/"
        path = item.item.rstrip("/") if is_dir else item.item
        if path in self.ignore or not (path in self._roots or path.startswith(self._below_roots)):
            return
        kind = "dir" if is_dir else "file"
        self.fold.add(kind, path)
        if self.also is not None:
            self.also(item, path)
        self.spill.write(f"{kind}\0{path}\0".encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Proof:
    """Whether the snapshot and the manifest list the same files and directories; if not, which differ."""

    agreed: bool
    entries: int
    appeared: list[str]  # in the snapshot, not in the manifest
    vanished: list[str]  # in the manifest, not in the snapshot


def _manifest_pairs(entries: Iterable[FileEntry], unprovable: Collection[str]) -> Iterable[tuple[str, str]]:
    """The (kind, path) pairs restic's stream would hold for ``entries`` (as :meth:`Fold.take` folds them)."""
    for entry in entries:
        if entry.type in _REPORTED and entry.path not in unprovable:
            yield entry.type, comparable_path(entry.path)


def prove(
    account: SnapshotAccount, entries: Iterable[FileEntry], unprovable: Collection[str], expected: Fold | None = None
) -> Proof:
    """Compare restic's account with the manifest's ``entries``: read only when the folds differ, or when the
    manifest's fold is not given as ``expected`` (folded while it was written: :meth:`Fold.take`); give a
    re-readable stream.

    ``unprovable``: paths the walk could not read (restic may or may not list them).
    Reads ``account.spill`` back (from its start) only when the folds differ.
    """
    if expected is None:
        expected = Fold()
        for kind, path in _manifest_pairs(entries, unprovable):
            expected.add(kind, path)
    seen = account.fold
    if seen == expected:
        return Proof(True, seen.count, [], [])
    account.spill.flush()
    account.spill.seek(0)
    fields = account.spill.read().decode("utf-8", "surrogatepass").split("\0")
    stored = {(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2)}
    stored = {(kind, path) for kind, path in stored if path not in unprovable}
    listed = set(_manifest_pairs(entries, unprovable))
    return Proof(
        agreed=stored == listed,
        entries=seen.count,
        appeared=sorted(path for _, path in stored - listed),
        vanished=sorted(path for _, path in listed - stored),
    )

