"""After restic: which entries are re-stat'ed to find files that changed while it read them, and when the manifest
is read back for it."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

from agents.jobs.restat import ReadSinceBase
from agents.restic.messages import BackupItem
from targets.files import manifest as fm
from targets.files.select import select_paths
from tests.support.configs import write_files


class CountedManifest:
    """A re-readable stream of entries that counts how often it is read."""

    def __init__(self, entries: list[fm.FileEntry]) -> None:
        self.entries = entries
        self.reads = 0

    def __iter__(self) -> Iterator[fm.FileEntry]:
        self.reads += 1
        return iter(self.entries)


def _manifest(root: pathlib.Path) -> tuple[list[fm.FileEntry], dict[str, fm.FileEntry]]:
    write_files(str(root), {"kept-1": "one", "kept-2": "two", "hashed": "three"})
    entries, *_ = fm.build_entries(select_paths([str(root)], []), "blake3", None)
    return entries, {os.path.basename(e.path): e for e in entries}


def _append(path: str) -> None:
    with open(path, "a") as handle:
        handle.write("changed while restic read it\n")


def _stored(action: str, path: str) -> BackupItem:
    return BackupItem(action=action, item=path)


def test_an_incremental_re_stats_what_the_agent_read_without_reading_the_manifest_back(tmp_path: pathlib.Path) -> None:
    entries, by_name = _manifest(tmp_path)
    watch = ReadSinceBase(incremental=True)
    watch.read_by_agent(by_name["hashed"])
    for name in ("kept-1", "kept-2"):
        watch.reported_by_restic(_stored("unchanged", by_name[name].path), by_name[name].path)
    watch.reported_by_restic(_stored("modified", by_name["hashed"].path), by_name["hashed"].path)
    _append(by_name["hashed"].path)
    manifest = CountedManifest(entries)
    assert watch.find_changed(manifest) == [by_name["hashed"].path]
    assert manifest.reads == 0


def test_a_file_only_restic_read_is_looked_up_in_the_manifest_and_re_stated(tmp_path: pathlib.Path) -> None:
    entries, by_name = _manifest(tmp_path)
    watch = ReadSinceBase(incremental=True)
    # The agent kept kept-1's hash from the base; it changed before restic read it, so restic calls it modified.
    _append(by_name["kept-1"].path)
    watch.reported_by_restic(_stored("modified", by_name["kept-1"].path), by_name["kept-1"].path)
    watch.reported_by_restic(_stored("new", str(tmp_path) + "/"), str(tmp_path))  # directories never count
    manifest = CountedManifest(entries)
    assert watch.find_changed(manifest) == [by_name["kept-1"].path]
    assert manifest.reads == 1


def test_a_full_or_too_many_entries_re_stat_the_whole_manifest(tmp_path: pathlib.Path) -> None:
    entries, by_name = _manifest(tmp_path)
    _append(by_name["kept-2"].path)  # nobody said they read it: only a whole re-stat can find it
    full = ReadSinceBase(incremental=False)
    full.read_by_agent(by_name["hashed"])
    read_by_agent = ReadSinceBase(incremental=True, kept=1)
    read_by_agent.read_by_agent(by_name["hashed"])
    read_by_agent.read_by_agent(by_name["kept-1"])
    reported_by_restic = ReadSinceBase(incremental=True, kept=1)
    for name in ("kept-1", "hashed"):
        reported_by_restic.reported_by_restic(_stored("new", by_name[name].path), by_name[name].path)
    for watch in (full, read_by_agent, reported_by_restic):
        manifest = CountedManifest(entries)
        assert watch.find_changed(manifest) == [by_name["kept-2"].path]
        assert manifest.reads == 1


def test_a_file_gone_after_the_agent_read_it_counts_as_changed(tmp_path: pathlib.Path) -> None:
    entries, by_name = _manifest(tmp_path)
    watch = ReadSinceBase(incremental=True)
    watch.read_by_agent(by_name["hashed"])
    os.unlink(by_name["hashed"].path)
    assert watch.find_changed(CountedManifest(entries)) == [by_name["hashed"].path]


def test_two_paths_restic_names_alike_are_not_taken_for_each_other(tmp_path: pathlib.Path) -> None:
    # b"r\xfe" and b"r\xff" are both "r\ufffd" to restic. The agent hashed one; restic reports the name modified:
    # that may be the other one, kept from the base and changed since, so the manifest is read for it.
    hashed, kept = (os.path.join(os.fsdecode(bytes(tmp_path)), os.fsdecode(b"r" + odd)) for odd in (b"\xfe", b"\xff"))
    for path in (hashed, kept):
        with open(path, "w") as handle:
            handle.write("before")
    entries, *_ = fm.build_entries(select_paths([str(tmp_path)], []), "blake3", None)
    by_path = {e.path: e for e in entries}
    watch = ReadSinceBase(incremental=True)
    watch.read_by_agent(by_path[hashed])
    _append(kept)
    reported = os.path.join(str(tmp_path), "r\ufffd")
    watch.reported_by_restic(_stored("modified", reported), reported)
    manifest = CountedManifest(entries)
    assert watch.find_changed(manifest) == [kept]
    assert manifest.reads == 1
