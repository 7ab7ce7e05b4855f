"""File selection with excludes, and the files manifest: hashing, reuse, change detection."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor

import blake3
import pytest

from targets import hashing
from targets.files import manifest as fm
from targets.files import walkspill
from targets.files.select import select_paths
from tests.support.configs import write_files


def _tree(root: pathlib.Path) -> None:
    write_files(str(root), {
        "a.txt": "alpha",
        "draft.tmp": "excluded",
        "sub/b.bin": b"\x00\x01" * 100,
        "sub/cache/c.dat": "excluded dir content",
        "cache": "a FILE named cache is kept: 'cache/' matches directories only",
        "logs/old.gz": "excluded by anchored pattern",
        "logs/new.log": "kept",
        "only-tmp/x.tmp": "its directory stays, empty, as restic keeps it",
    })
    (root / "empty").mkdir()
    os.symlink("a.txt", root / "link")


def test_selection_applies_each_pattern_form(tmp_path: pathlib.Path) -> None:
    _tree(tmp_path)
    selection = select_paths([str(tmp_path), str(tmp_path / "absent")], ["*.tmp", "cache/", "logs/*.gz"])
    relative = {os.path.relpath(f.path, tmp_path): f.kind for f in selection.found}
    assert relative == {
        ".": "dir", "a.txt": "file", "cache": "file", "empty": "dir", "link": "symlink",
        "logs": "dir", "logs/new.log": "file", "sub": "dir", "sub/b.bin": "file", "only-tmp": "dir",
    }
    assert selection.missing_roots == [str(tmp_path / "absent")]
    assert selection.roots == [str(tmp_path)]
    # restic is told each left-out entry once, as an exact path; nothing below an excluded directory.
    left_out = {os.path.relpath(p, tmp_path) for p in selection.excluded}
    assert left_out == {"draft.tmp", "sub/cache", "logs/old.gz", "only-tmp/x.tmp"}


def test_the_walk_kept_on_disk_reads_back_as_walked(tmp_path: pathlib.Path) -> None:
    # Between the walk's stat (before restic starts) and the hashing beside restic, the walk waits on disk.
    _tree(tmp_path)
    with open(os.path.join(os.fsencode(tmp_path), b"odd\xff"), "wb") as handle:
        handle.write(b"a name that is not UTF-8")
    walked = select_paths([str(tmp_path)], ["*.tmp"]).found
    spill = io.BytesIO()
    assert walkspill.write(iter(walked), spill) == len(walked)
    spill.seek(0)
    back = list(walkspill.read(spill))
    fields = ("st_mode", "st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")
    assert [(f.path, f.kind, [getattr(f.st, n) for n in fields]) for f in back] == [
        (f.path, f.kind, [getattr(f.st, n) for n in fields]) for f in walked]
    with pytest.raises(ValueError, match="inside a record"):
        list(walkspill.read(io.BytesIO(spill.getvalue()[:-1])))


def test_absolute_pattern(tmp_path: pathlib.Path) -> None:
    _tree(tmp_path)
    selection = select_paths([str(tmp_path)], [str(tmp_path / "sub")])
    assert not any("sub" in f.path for f in selection.found)


@pytest.mark.parametrize("algorithm", hashing.ALGORITHMS)
def test_hashes_match_reference_implementations(tmp_path: pathlib.Path, algorithm: str) -> None:
    data = os.urandom(3 * fm.CHUNK + 17)
    (tmp_path / "f").write_bytes(data)
    digest, _ = fm.hash_file(str(tmp_path / "f"), algorithm)
    reference = {
        "blake3": blake3.blake3(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sm3": None,
    }[algorithm]
    assert digest.startswith(algorithm + ":")
    if reference is not None:
        assert digest == f"{algorithm}:{reference}"
    else:  # GB/T 32905 test vector for "abc"
        assert hashing.digest_bytes("sm3", b"abc") == (
            "sm3:66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        )


def test_a_read_buffer_used_for_a_large_file_leaves_nothing_in_a_small_one(tmp_path: pathlib.Path) -> None:
    # The buffer is kept between files: a small file read after a large one must hash its own bytes only.
    (tmp_path / "large").write_bytes(os.urandom(2 * fm.CHUNK + 5))
    (tmp_path / "small").write_bytes(b"tiny")
    fm.hash_file(str(tmp_path / "large"), "sha256")
    digest, after = fm.hash_file(str(tmp_path / "small"), "sha256")
    assert digest == "sha256:" + hashlib.sha256(b"tiny").hexdigest()
    assert after.st_size == 4


def test_large_items_go_to_the_pool_and_small_ones_stay_on_the_calling_thread() -> None:
    sizes = [10, fm._INLINE_BYTES, 3, fm._INLINE_BYTES * 4, 0, fm._INLINE_BYTES - 1]

    def work(size: int) -> tuple[int, int]:
        return size, threading.get_ident()

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = fm.map_by_size(pool, work, sizes, lambda size: size)
    assert [size for size, _ in results] == sizes  # in the items' order, whoever did them
    here = threading.get_ident()
    assert {size for size, thread in results if thread == here} == {10, 3, 0, fm._INLINE_BYTES - 1}


def test_the_walk_goes_depth_first_each_directory_by_name(tmp_path: pathlib.Path) -> None:
    write_files(str(tmp_path), {"a/b/c": "1", "a/b2": "2", "a/skip/x": "0", "a/z/deep/er": "3", "a-c": "4", "b": "5"})
    os.mkfifo(tmp_path / "a" / "pipe")
    selection = select_paths([str(tmp_path)], ["skip/"])
    found = [f.path[len(str(tmp_path)):] for f in selection.found]
    assert found == ["", "/a", "/a/b", "/a/b/c", "/a/b2", "/a/z", "/a/z/deep", "/a/z/deep/er", "/a-c", "/b"]
    assert selection.excluded == [str(tmp_path / "a" / "pipe"), str(tmp_path / "a" / "skip")]


def test_never_paths_are_left_out_exactly_whatever_their_names_hold(tmp_path: pathlib.Path) -> None:
    write_files(str(tmp_path), {"state[1]/index": "agent's own", "state1/kept": "data", "state[1]x/kept": "data"})
    found = {f.path for f in select_paths([str(tmp_path)], [], never=[str(tmp_path / "state[1]")]).found}
    assert str(tmp_path / "state[1]") not in found and str(tmp_path / "state[1]" / "index") not in found
    assert {str(tmp_path / "state1" / "kept"), str(tmp_path / "state[1]x" / "kept")} <= found


def test_a_file_replaced_after_the_walk_by_one_of_the_same_size_and_mtime_is_marked(tmp_path: pathlib.Path) -> None:
    # Between the walk and its hashing: a check of the file around its reading alone would not see it.
    write_files(str(tmp_path), {"data/doc": "version 1", "data/still": "s", "new": "version 2"})
    old = os.lstat(tmp_path / "data" / "doc")
    selection = select_paths([str(tmp_path / "data")], [])
    os.utime(tmp_path / "new", ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(tmp_path / "new", tmp_path / "data" / "doc")  # a rename moves the ctime
    entries, *_ = fm.build_entries(selection, "blake3", None)
    by_name = {os.path.basename(e.path): e for e in entries if e.type == "file"}
    assert {name for name, e in by_name.items() if e.changed_during_backup} == {"doc"}
    assert by_name["doc"].hash == hashing.digest_bytes("blake3", b"version 2")


def test_a_failure_on_either_side_of_the_split_is_raised() -> None:
    def work(size: int) -> int:
        if size in (1, fm._INLINE_BYTES * 2):
            raise ValueError(size)
        return size

    with ThreadPoolExecutor(max_workers=2) as pool:
        with pytest.raises(ValueError, match=r"^1$"):
            fm.map_by_size(pool, work, [1, fm._INLINE_BYTES], lambda size: size)
        with pytest.raises(ValueError, match=str(fm._INLINE_BYTES * 2)):
            fm.map_by_size(pool, work, [5, fm._INLINE_BYTES * 2], lambda size: size)


def _entry(path: str, kind: str = "file") -> fm.FileEntry:
    return fm.FileEntry(path, kind, 1, 0o644, 1, 1, 1, None if kind == "dir" else "blake3:" + "0" * 64)


def test_the_base_cursor_finds_in_walk_order_and_never_a_wrong_entry() -> None:
    base = [_entry("/s", "dir"), _entry("/s/a"), _entry("/s/gone"), _entry("/s/sub", "dir"), _entry("/s/sub/x"),
            _entry("/s/z")]
    cursor = fm.BaseCursor(base)
    assert cursor.get("/s/a") == base[1]
    assert cursor.get("/s/new") is None  # not in the base: the cursor stays before /s/sub
    assert cursor.get("/s/sub/x") == base[4]  # past a base-only entry and a directory
    assert cursor.get("/s/sub/x") is None  # asked twice: not found again
    assert cursor.get("/s/a") is None  # behind the cursor: never found (hashed again), never another entry
    assert cursor.get("/s/z") == base[5]
    assert cursor.get("/t") is None


def test_unknown_algorithm() -> None:
    with pytest.raises(hashing.UnknownAlgorithm, match="blake3"):
        hashing.new_hasher("md5")


def test_unchanged_files_keep_their_hash_and_changed_ones_are_rehashed(tmp_path: pathlib.Path) -> None:
    write_files(str(tmp_path), {"same": "1", "grows": "2"})
    first, _, hashed, _, reused = fm.build_entries(select_paths([str(tmp_path)], []), "blake3", None)
    assert (hashed, reused) == (2, 0)
    with open(tmp_path / "grows", "a") as handle:
        handle.write("more")
    base = fm.index_entries(first)
    second, _, hashed, _, reused = fm.build_entries(select_paths([str(tmp_path)], []), "blake3", base)
    assert (hashed, reused) == (1, 1)
    by_path = {os.path.basename(e.path): e for e in second}
    assert by_path["grows"].hash == hashing.digest_bytes("blake3", b"2more")
    # A base hash of another algorithm is never reused.
    _, _, hashed, _, reused = fm.build_entries(select_paths([str(tmp_path)], []), "sha256", base)
    assert (hashed, reused) == (2, 0)


def test_a_base_entry_marked_changed_is_not_reused(tmp_path: pathlib.Path) -> None:
    write_files(str(tmp_path), {"f": "x"})
    entries, *_ = fm.build_entries(select_paths([str(tmp_path)], []), "blake3", None)
    tainted = {e.path: dataclasses.replace(e, changed_during_backup=True) for e in entries}
    _, _, hashed, _, reused = fm.build_entries(select_paths([str(tmp_path)], []), "blake3", tainted)
    assert (hashed, reused) == (1, 0)


def test_change_after_hashing_is_detected(tmp_path: pathlib.Path) -> None:
    write_files(str(tmp_path), {"live.log": "line\n", "quiet": "q"})
    entries, *_ = fm.build_entries(select_paths([str(tmp_path)], []), "blake3", None)
    with open(tmp_path / "live.log", "a") as handle:
        handle.write("appended while restic was reading\n")
    os.unlink(tmp_path / "quiet")
    changed = {os.path.basename(p) for p in fm.find_changed_since(entries)}
    assert changed == {"live.log", "quiet"}


def test_comparison_names_each_kind_of_difference(tmp_path: pathlib.Path) -> None:
    from targets.files.verify import compare_restored

    source = tmp_path / "src"
    write_files(str(source), {"same": "1", "edited": "2", "gone": "3", "moving": "4"})
    entries, *_ = fm.build_entries(select_paths([str(source)], []), "blake3", None)
    manifest = fm.FilesManifest("blake3", "h", "p", "t", "job", "full", [str(source)], [], entries)
    restored = tmp_path / "restored"
    for entry in entries:  # restore by hand, keeping metadata
        target = restored / entry.path.lstrip("/")
        if entry.type == "dir":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(pathlib.Path(entry.path).read_bytes())
            os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))
            os.chmod(target, entry.mode)
    base = restored / str(source).lstrip("/")
    (base / "edited").write_text("X")
    (base / "moving").write_text("Y")
    (base / "gone").unlink()
    (base / "extra").write_text("not in the manifest")
    result = compare_restored(manifest, str(restored), changed={str(source / "moving")})
    found = {(d.code, os.path.basename(d.path)) for d in result.differences}
    assert found == {("content_mismatch", "edited"), ("missing", "gone"), ("unexpected", "extra"),
                     ("changed_during_backup", "moving")}
    assert {os.path.basename(d.path) for d in result.failures} == {"edited", "gone", "extra"}


def test_the_restored_walk_excuses_only_the_directories_above_the_roots(tmp_path: pathlib.Path) -> None:
    from targets.files.verify import compare_restored

    source = tmp_path / "src" / "data"
    write_files(str(source), {"a/b": "1", "c": "2"})
    entries, *_ = fm.build_entries(select_paths([str(source)], []), "blake3", None)
    manifest = fm.FilesManifest("blake3", "h", "p", "t", "job", "full", [str(source)], [], entries)
    restored = tmp_path / "restored"
    for entry in entries:
        target = restored / entry.path.lstrip("/")
        if entry.type == "dir":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(pathlib.Path(entry.path).read_bytes())
            os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))
    beside = restored / str(source.parent).lstrip("/")
    (beside / "stray").write_text("beside the root")  # not above a root: unexpected
    os.symlink("/etc", restored / str(source).lstrip("/") / "a" / "link")  # listed, never followed
    result = compare_restored(manifest, str(restored))
    assert sorted((d.code, d.path) for d in result.differences) == [
        ("unexpected", f"{source}/a/link"), ("unexpected", f"{source.parent}/stray")]
    assert result.files_compared == 2
