"""The stored form of a files manifest: compact, exact, and refused when it could mislead a comparison."""

from __future__ import annotations

import io
import json
import lzma
import os
import pathlib
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targets.files import manifest as fm
from targets.files import manifest_store as store
from targets.files.select import select_paths, walk_order
from tests.support.configs import write_files

DIGEST = "sha256:" + "ab" * 32


def _manifest(entries: list[fm.FileEntry], **fields: Any) -> fm.FilesManifest:
    return fm.FilesManifest("sha256", "h", "p", "t", "job", "full", ["/srv"], [], entries, **fields)


def _file(path: str, **fields: Any) -> fm.FileEntry:
    values: dict[str, Any] = {"type": "file", "size": 1, "mode": 0o644, "mtime_ns": 1, "ctime_ns": 1, "inode": 1,
                              "hash": DIGEST, **fields}
    return fm.FileEntry(path=path, **values)


def _dir(path: str) -> fm.FileEntry:
    return fm.FileEntry(path, "dir", 0, 0o755, 5, 5, 2, None)


def test_a_walked_tree_reads_back_exactly_and_writes_the_same_bytes(tmp_path: pathlib.Path) -> None:
    write_files(str(tmp_path), {"a": "1", "b/c": "2", "b/d/e": "three", "name with\nbreak": "4"})
    os.symlink("a", tmp_path / "link")
    os.mkdir(tmp_path / "empty")
    (tmp_path / os.fsdecode(b"latin-\xe9")).write_bytes(b"not UTF-8 as a name")
    entries, unreadable, hashed, hashed_bytes, reused = fm.build_entries(
        select_paths([str(tmp_path)], []), "sha256", None)
    manifest = fm.FilesManifest("sha256", "h", "p", "t", "job", "incremental", [str(tmp_path)], ["*.tmp"], entries,
                                unreadable, base_snapshot_id="f" * 64, hashed_files=hashed,
                                hashed_bytes=hashed_bytes, reused_hashes=reused)
    data = store.to_bytes(manifest)
    parsed = store.parse_manifest(data)
    assert parsed == manifest
    assert store.to_bytes(parsed) == data
    assert parsed.files == 5 and {e.type for e in parsed.entries} == {"file", "dir", "symlink"}


def test_extreme_metadata_survives_the_differences_modulo_two_to_the_64() -> None:
    entries = [_dir("/srv"),
               _file("/srv/a", mtime_ns=-(2 ** 62), ctime_ns=2 ** 63 - 1, inode=2 ** 64 - 1, size=2 ** 63,
                     changed_during_backup=True),
               _file("/srv/b", mtime_ns=2 ** 63 - 1, ctime_ns=-(2 ** 63), inode=0, mode=0o7777)]
    assert store.parse_manifest(store.to_bytes(_manifest(entries))).entries == entries


def test_an_entry_whose_parent_is_not_in_the_manifest_keeps_its_whole_path() -> None:
    entries = [_file("/srv/one/file"), _dir("/srv/two"), _file("/srv/two/x"), _file("/srv/twofold")]
    assert store.parse_manifest(store.to_bytes(_manifest(entries))).entries == entries


def test_many_similar_files_store_under_40_bytes_each_over_several_blocks() -> None:
    count = store.BLOCK_ENTRIES + 4000
    entries = [_dir("/srv/data")]
    for i in range(count):
        moment = 1_700_000_000_000_000_000 + i * 1_234_567
        entries.append(_file(f"/srv/data/f{i:06d}.bin", size=1000 + (i * 7919) % 50000, mtime_ns=moment,
                             ctime_ns=moment, inode=1000 + i, hash="sha256:" + os.urandom(32).hex()))
    data = store.to_bytes(_manifest(entries))
    assert len(data) / count < 40
    assert store.parse_manifest(data).entries == entries  # the second block's parent is in the first


@pytest.mark.parametrize("path", ["/srv/../etc/shadow", "relative/x", "/srv//x", "/srv/x/", "/"])
def test_a_path_that_is_not_absolute_and_normal_is_refused(path: str) -> None:
    with pytest.raises(fm.ManifestError, match="not an absolute, normal path"):
        store.parse_manifest(store.to_bytes(_manifest([_file(path)])))
    legacy = {**_legacy_document(), "entries": [{**_legacy_entry(), "path": path}]}
    with pytest.raises(fm.ManifestError, match="not an absolute, normal path"):
        store.parse_manifest(json.dumps(legacy).encode())


@pytest.mark.parametrize("name", ["..", "."])
def test_a_name_that_is_not_one_component_is_refused(name: str) -> None:
    data = store.to_bytes(_manifest([_dir("/srv"), _file(f"/srv/{name}")]))
    with pytest.raises(fm.ManifestError, match="not one path component"):
        store.parse_manifest(data)


def test_a_path_twice_out_of_order_or_under_a_file_is_refused() -> None:
    data = store.to_bytes(_manifest([_dir("/srv"), _file("/srv/a"), _file("/srv/b")]))
    with pytest.raises(fm.ManifestError, match="out of order, or named twice"):
        store.parse_manifest(_rewrite_columns(data, lambda columns: columns.replace(b"a\0b", b"a\0a", 1)))
    with pytest.raises(fm.ManifestError, match="out of order, or named twice"):
        store.parse_manifest(_rewrite_columns(data, lambda columns: columns.replace(b"a\0b", b"b\0a", 1)))
    with pytest.raises(ValueError, match="walk order"):  # the writer makes no such manifest either
        store.to_bytes(_manifest([_dir("/srv"), _file("/srv/b"), _file("/srv/a")]))
    forged = _rewrite_columns(store.to_bytes(_manifest([_file("/srv/a"), _file("/srv/b")])),
                              lambda columns: columns.replace(b"/srv/b" + bytes(8), b"b\0\x01" + bytes(6), 1))
    with pytest.raises(fm.ManifestError, match="parent is not a directory"):
        store.parse_manifest(forged)


def test_walk_order_puts_a_directory_right_before_what_is_under_it() -> None:
    paths = ["/srv/a.b", "/srv/a/x", "/srv/a", "/srv", "/srv/a-", "/srv/a/x/y", "/srv/b"]
    assert sorted(paths, key=walk_order) == [
        "/srv", "/srv/a", "/srv/a/x", "/srv/a/x/y", "/srv/a-", "/srv/a.b", "/srv/b"]


def test_a_reader_streams_entries_then_gives_head_and_tail() -> None:
    entries = [_dir("/srv"), _file("/srv/a"), _dir("/srv/b"), _file("/srv/b/c")]
    reader = store.ManifestReader(io.BytesIO(store.to_bytes(_manifest(entries, unreadable=[
        {"path": "/srv/x", "error": "Permission denied"}]))))
    with pytest.raises(fm.ManifestError, match="tail not reached"):
        reader.manifest()
    assert list(reader) == entries
    assert reader.manifest().unreadable == [{"path": "/srv/x", "error": "Permission denied"}]


def test_truncated_padded_or_bomb_manifests_are_refused() -> None:
    data = store.to_bytes(_manifest([_dir("/srv"), _file("/srv/a")]))
    with pytest.raises(fm.ManifestError, match="ends inside its tail"):
        store.parse_manifest(data[:-1])
    with pytest.raises(fm.ManifestError, match="after its tail"):
        store.parse_manifest(data + b"\0")
    bomb = _rewrite_columns(data, lambda columns: columns + bytes(200 << 20))
    with pytest.raises(fm.ManifestError, match="expands beyond"):
        store.parse_manifest(bomb)
    with pytest.raises(fm.ManifestError, match="neither"):
        store.parse_manifest(b"\xff not a manifest")
    with pytest.raises(fm.ManifestError, match="not a files manifest"):
        store.parse_manifest(b'{"schema": "something/else"}')


def test_a_manifest_of_the_json_form_earlier_backups_wrote_still_reads() -> None:
    parsed = store.parse_manifest(json.dumps(_legacy_document()).encode())
    assert [(e.path, e.hash, e.changed_during_backup) for e in parsed.entries] == [("/srv/a", "sha256:00", False)]
    assert parsed.algorithm == "sha256" and parsed.level == "full"


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_any_change_to_a_stored_manifest_reads_or_is_refused_typed(at: int, replacement: bytes) -> None:
    data = store.to_bytes(_manifest([_dir("/srv"), _file("/srv/a"), _dir("/srv/b"), _file("/srv/b/c")]))
    changed = data[:at % len(data)] + replacement + data[at % len(data) + len(replacement):]
    try:
        manifest = store.parse_manifest(changed)
    except fm.ManifestError:
        return
    for entry in manifest.entries:  # what does read holds only absolute, normal, distinct paths
        assert entry.path.startswith("/") and os.path.normpath(entry.path) == entry.path
    assert len({e.path for e in manifest.entries}) == len(manifest.entries)


def _rewrite_columns(data: bytes, change: Any) -> bytes:
    """The same stored manifest (of one block) with the block's decompressed columns changed by ``change``."""
    at = len(store.MAGIC)
    at += 4 + struct.unpack("<I", data[at:at + 4])[0]
    count, length = struct.unpack("<IQ", data[at:at + 12])
    columns = lzma.decompress(data[at + 12:at + 12 + length])
    packed = lzma.compress(change(columns), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
    return data[:at] + struct.pack("<IQ", count, len(packed)) + packed + data[at + 12 + length:]


def _legacy_entry() -> dict[str, Any]:
    return {"path": "/srv/a", "type": "file", "size": 1, "mode": 420, "mtime_ns": 1, "ctime_ns": 1, "inode": 1,
            "hash": "sha256:00"}


def _legacy_document() -> dict[str, Any]:
    return {"schema": "drill.manifest.files/v1", "algorithm": "sha256", "host": "h", "policy": "p", "target": "t",
            "job_id": "j", "level": "full", "base_snapshot_id": None, "roots": ["/srv"], "exclude": [],
            "entries": [_legacy_entry()], "unreadable": [], "missing_roots": [],
            "totals": {"files": 1, "bytes": 1, "entries": 1, "hashed_files": 1, "hashed_bytes": 1,
                       "reused_hashes": 0, "changed_during_backup": 0}}
