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
from collections.abc import Collection
from dataclasses import dataclass, field

from targets import hashing
from targets.files.manifest import FileEntry, FilesManifest, hash_file
from targets.files.select import with_ancestors


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


def _outside(root: str, where: str) -> bool:
    """Whether ``where`` leads out of ``root`` through a symlinked directory of the restored tree."""
    parent = os.path.realpath(os.path.dirname(where))
    top = os.path.realpath(root)
    return parent != top and not parent.startswith(top + os.sep)


def _compare_entry(entry: FileEntry, root: str, algorithm: str, result: Comparison) -> Difference | None:
    where = _restored(root, entry.path)
    if _outside(root, where):
        return Difference("unsafe_path", entry.path, "its directory in the restored snapshot is a symlink leading "
                          "out of the scratch directory: not followed")
    try:
        st = os.lstat(where)
    except FileNotFoundError:
        return Difference("missing", entry.path, "in the manifest, not in the restored snapshot")
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else (
        "file" if stat.S_ISREG(st.st_mode) else "other")
    if kind != entry.type:
        return Difference("type_mismatch", entry.path, f"manifest says {entry.type}, restored is {kind}")
    if kind == "dir":
        return None
    if kind == "symlink":
        digest = hashing.digest_bytes(algorithm, os.fsencode(os.readlink(where)))
        return None if digest == entry.hash else Difference("content_mismatch", entry.path, "symlink target differs")
    result.files_compared += 1
    result.bytes_compared += st.st_size
    if st.st_size != entry.size:
        return Difference("size_mismatch", entry.path, f"manifest {entry.size} bytes, restored {st.st_size}")
    digest, _, _ = hash_file(where, algorithm)
    if digest != entry.hash:
        return Difference("content_mismatch", entry.path, f"manifest {entry.hash}, restored {digest}")
    mode = stat.S_IMODE(st.st_mode)
    if mode != entry.mode:
        return Difference("mode_mismatch", entry.path, f"manifest {entry.mode:o}, restored {mode:o}")
    if st.st_mtime_ns != entry.mtime_ns:
        return Difference("mtime_mismatch", entry.path, f"manifest {entry.mtime_ns}, restored {st.st_mtime_ns}")
    return None


def compare_restored(
    manifest: FilesManifest, root: str, *, changed: Collection[str] = (), ignore: Collection[str] = ()
) -> Comparison:
    """Compare the tree restored under ``root`` with ``manifest``.

    ``changed``: paths the backup record names as changed while restic read them.
    ``ignore``: absolute paths in the snapshot that are not data (the manifest file itself).
    """
    result = Comparison()
    expected = {e.path for e in manifest.entries}
    for entry in manifest.entries:
        difference = _compare_entry(entry, root, manifest.algorithm, result)
        if difference is None:
            continue
        if entry.changed_during_backup or entry.path in changed:
            difference = Difference("changed_during_backup", entry.path, difference.detail)
        result.differences.append(difference)
    # Ancestors of the backed-up paths are restored too; they are not data of the target.
    known: set[str] = set()
    for start in {*expected, *ignore}:
        known |= with_ancestors(start)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = "/" + os.path.relpath(os.path.join(directory, name), root)
            if path not in known:
                code = "changed_during_backup" if path in changed else "unexpected"
                result.differences.append(Difference(code, path, "in the restored snapshot, not in the manifest"))
    return result
