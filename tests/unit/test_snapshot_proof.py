"""Pure: restic's account of a snapshot folded and compared with the manifest."""

from __future__ import annotations

import io
import os

from agents.jobs.snapshot_proof import SnapshotAccount, comparable_path, prove
from agents.restic.messages import BackupItem, parse_backup_message
from targets.files.manifest import FileEntry
from targets.files.select import with_ancestors


def _entry(path: str, kind: str = "file") -> FileEntry:
    return FileEntry(path=path, type=kind, size=1, mode=0o644, mtime_ns=1, ctime_ns=1, inode=1, hash=None)


MANIFEST = [_entry("/srv/a", "dir"), _entry("/srv/a/x"), _entry("/srv/a/l", "symlink"), _entry("/srv/a/\udcff")]


def _account(items: list[str]) -> SnapshotAccount:
    account = SnapshotAccount(["/srv/a"], with_ancestors("/var/state/staging/m.json"), io.BytesIO())
    for item in items:
        account.take(BackupItem("new", item))
    return account


def test_the_same_set_in_any_order_agrees_without_reading_the_spill_back() -> None:
    # restic lists parents of the root and the staged manifest too; neither is target data. No symlinks.
    account = _account(["/srv/a/\ufffd", "/srv/a/x", "/srv/", "/var/state/staging/m.json", "/srv/a/"])
    proof = prove(account, MANIFEST, unprovable=set())
    assert proof.agreed and proof.entries == 3 and not proof.appeared and not proof.vanished


def test_differences_are_named_both_ways() -> None:
    account = _account(["/srv/a/", "/srv/a/new/", "/srv/a/new/f", "/srv/a/\ufffd"])
    proof = prove(account, MANIFEST, unprovable=set())
    assert not proof.agreed
    assert proof.appeared == ["/srv/a/new", "/srv/a/new/f"] and proof.vanished == ["/srv/a/x"]


def test_what_the_walk_could_not_read_is_left_out_on_both_sides() -> None:
    account = _account(["/srv/a/", "/srv/a/x", "/srv/a/\ufffd", "/srv/a/locked/"])
    assert prove(account, MANIFEST, unprovable={"/srv/a/locked"}).agreed


def test_verbose_status_lines_are_read_fast_and_in_any_field_order() -> None:
    usual = ('{"message_type":"verbose_status","action":"new","item":"/srv/a/\\"q\\"\\u00e9/","duration":0.1,'
             '"data_size":0}')
    assert parse_backup_message(usual) == BackupItem("new", '/srv/a/"q"\u00e9/')
    reordered = '{"item":"/srv/b","action":"unchanged","message_type":"verbose_status"}'
    assert parse_backup_message(reordered) == BackupItem("unchanged", "/srv/b")
    finished = '{"message_type":"verbose_status","action":"scan_finished","item":"","duration":0.1}'
    assert parse_backup_message(finished) is None


def test_a_path_that_is_not_utf8_compares_as_restic_prints_it() -> None:
    # Seen from restic 0.14 and 0.18: one U+FFFD per odd byte, also for a truncated sequence of several.
    named = {b"a\xe2\x82z": "a\ufffd\ufffdz", b"b\xff": "b\ufffd", b"c\xed\xa0\x80": "c\ufffd\ufffd\ufffd",
             "d\u00e9".encode(): "d\u00e9"}
    for raw, printed in named.items():
        assert comparable_path(os.fsdecode(raw)) == printed
