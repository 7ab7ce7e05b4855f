"""The agent's own defences, each shown to hold: one key under concurrent first starts, journal notes of dead
jobs, reaped scratch directories, special files and over-long paths, manifests that try to leave the scratch."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from agents.journal import Journal
from agents.restic.exitcodes import ResticOutcome, classify_exit, damage_in
from agents.restic.features import ResticVersion
from agents.scratch.reaper import PROCESSES, reap, scratch_directory
from agents.state import StateDir
from drill.ledger.store import SqliteStore, StoreError
from targets.files import manifest as fm
from targets.files.select import select_paths
from targets.files.verify import compare_restored

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_concurrent_first_starts_make_one_key(tmp_path: pathlib.Path) -> None:
    script = ("import sys; sys.path.insert(0, sys.argv[2])\n"
              "from agents.contract.signing import ensure_key\n"
              "print(ensure_key(sys.argv[1])[0].keyid)\n")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "keys"), str(ROOT)],
                             stdout=subprocess.PIPE, text=True) for _ in range(8)]
    ids = {run.communicate()[0].strip() for run in runs}
    assert len(ids) == 1 and next(iter(ids)).startswith("sha256:")
    assert sorted(os.listdir(tmp_path / "keys")) == ["signing.key", "signing.pub"]


def test_first_opens_of_a_new_sqlite_ledger_at_once_all_succeed(tmp_path: pathlib.Path) -> None:
    # Two drillctl commands starting together on a new ledger: switching it to write-ahead logging takes a lock
    # SQLite does not wait for by itself (it failed about one round in ten before each open waited for it).
    failures: list[str] = []
    for round_number in range(20):
        path = str(tmp_path / f"ledger-{round_number}.db")
        barrier = threading.Barrier(6)

        def open_once(path: str = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                SqliteStore(path).close()
            except StoreError as error:
                failures.append(str(error))

        threads = [threading.Thread(target=open_once) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_a_journal_note_outlives_only_a_dead_process(tmp_path: pathlib.Path) -> None:
    state = StateDir(str(tmp_path))
    journal = Journal(state)
    with journal.running("mine", "local", []):
        assert journal.left_behind() == []  # this process is alive
    assert journal.left_behind() == []  # and its note went with the block
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    with open(tmp_path / "journal" / "gone.json", "w") as handle:
        json.dump({"job_id": "gone", "repository": "local", "pid": int(dead), "pid_start": "1", "staged": []},
                  handle)
    assert [note.job_id for note in journal.left_behind()] == ["gone"]


def test_a_scratch_directory_is_reaped_only_when_its_verification_died(tmp_path: pathlib.Path) -> None:
    parent = str(tmp_path)
    with scratch_directory(parent) as live:
        assert reap(parent) == [] and os.path.isdir(live)  # held by this process
    assert os.listdir(parent) == []  # removed when the block ends
    script = ("import sys, os, time; sys.path.insert(0, sys.argv[2])\n"
              "from agents.scratch.reaper import scratch_directory, note_process\n"
              "with scratch_directory(sys.argv[1]) as d:\n"
              "    child = __import__('subprocess').Popen(['sleep', '300'])\n"
              "    note_process(d, child.pid); print(d, child.pid, flush=True); time.sleep(300)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, parent, str(ROOT)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    directory, child = holder.stdout.readline().split()
    holder.kill()  # kill -9: the lock goes with it, the directory and the child stay
    holder.wait()
    assert os.path.isdir(directory) and os.path.exists(f"/proc/{child}")
    assert pathlib.Path(directory, PROCESSES).read_text().startswith(child)
    assert reap(parent) == [directory]
    assert not os.path.exists(directory)
    stat_file = pathlib.Path(f"/proc/{child}/stat")
    for _ in range(100):  # killed: gone, or a zombie until its new parent reaps it
        if not stat_file.exists() or stat_file.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the noted process {child} still runs")


def test_special_files_and_over_long_paths_are_named_not_fatal(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "plain.txt").write_text("x")
    os.mkfifo(root / "pipe")
    deep = os.open(root, os.O_RDONLY)
    try:  # a chain of directories deeper than PATH_MAX, made relative to each other
        for _ in range(18):
            os.mkdir("d" * 250, dir_fd=deep)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=deep)
            os.close(deep)
            deep = inner
    finally:
        os.close(deep)
    selection = select_paths([str(root)], [])
    assert [(path.rsplit("/", 1)[1], what) for path, what in selection.skipped_special] == [("pipe", "FIFO")]
    assert any(p.endswith("plain.txt") for p in (f.path for f in selection.found))
    assert selection.unreadable_dirs and "too long" in selection.unreadable_dirs[0][1].lower()


def test_a_restored_symlink_directory_never_leads_the_comparison_outside(tmp_path: pathlib.Path) -> None:
    restored = tmp_path / "restored"
    (restored / "srv" / "data").mkdir(parents=True)
    (restored / "srv" / "data" / "ok").write_bytes(b"ok")
    os.symlink("/etc", restored / "srv" / "conf")  # a snapshot may hold any symlink
    os.symlink("data", restored / "srv" / "alias")  # one that stays inside leads nowhere it should not
    ok = fm.hash_file(str(restored / "srv" / "data" / "ok"), "sha256")[0]
    mtime = (restored / "srv" / "data" / "ok").stat().st_mtime_ns
    manifest = fm.FilesManifest("sha256", "h", "p", "t", "j", "full", ["/srv"], [], entries=[
        fm.FileEntry("/srv/alias/ok", "file", 2, 0o644, mtime, 1, 1, ok),
        fm.FileEntry("/srv/conf/hostname", "file", 1, 0o644, 1, 1, 1, "sha256:0"),
        fm.FileEntry("/srv/conf/passwd", "file", 1, 0o644, 1, 1, 1, "sha256:0"),  # its directory's answer kept
        fm.FileEntry("/srv/data/ok", "file", 2, 0o644, mtime, 1, 1, ok)])
    os.chmod(restored / "srv" / "data" / "ok", 0o644)
    comparison = compare_restored(manifest, str(restored))
    assert [(d.code, d.path) for d in comparison.differences if d.code != "unexpected"] == [
        ("unsafe_path", "/srv/conf/hostname"), ("unsafe_path", "/srv/conf/passwd")]
    assert comparison.files_compared == 2  # nothing under /etc was read; the two inside were


def test_a_restored_file_or_symlink_loop_above_an_entry_is_a_finding_not_a_crash(tmp_path: pathlib.Path) -> None:
    restored = tmp_path / "restored"
    (restored / "srv").mkdir(parents=True)
    (restored / "srv" / "was-a-dir").write_bytes(b"")  # the manifest's directory restored as a file
    os.symlink("loop", restored / "srv" / "loop")  # a symlink to itself
    manifest = fm.FilesManifest("sha256", "h", "p", "t", "j", "full", ["/srv"], [], entries=[
        fm.FileEntry("/srv/loop/f", "file", 1, 0o644, 1, 1, 1, "sha256:0"),
        fm.FileEntry("/srv/was-a-dir/f", "file", 1, 0o644, 1, 1, 1, "sha256:0")])
    comparison = compare_restored(manifest, str(restored))
    assert [(d.code, d.path) for d in comparison.differences if d.code != "unexpected"] == [
        ("unsafe_path", "/srv/loop/f"), ("missing", "/srv/was-a-dir/f")]


V14, V18 = ResticVersion(0, 14, 0), ResticVersion(0, 18, 0)


@pytest.mark.parametrize(("code", "version", "stderr", "expected", "pack"), [
    (1, V14, ["ignoring error for /srv/big: ciphertext verification failed", "Fatal: There were 1 errors"],
     ResticOutcome.DAMAGED, None),
    (2, V14, ["cannot dump file: decrypting blob 7ad2 failed: ciphertext verification failed"],
     ResticOutcome.DAMAGED, None),
    (1, V18, ["ignoring error for /srv/big: decrypting blob <data/cea7d82e> from cd9768bd failed: "
              "ciphertext verification failed"], ResticOutcome.DAMAGED, "cd9768bd"),
    (1, V18, ["Fatal: cannot dump file: ReadFull(<data/cd9768bd48>): open /r/data/cd/" + "cd" * 32
              + ": no such file or directory"], ResticOutcome.DAMAGED, "cd" * 32),
    (1, V14, ["Fatal: unable to open config file: Stat: The Access Key Id you provided does not exist in our "
              "records.", "Is there a repository at the following location?"], ResticOutcome.ACCESS_DENIED, None),
    (1, V14, ["Fatal: unable to open config file: Stat: The request signature we calculated does not match the "
              "signature you provided.", "Is there a repository at the following location?"],
     ResticOutcome.ACCESS_DENIED, None),
    # A parent snapshot forgotten behind the agent's back is "not found", not bad data.
    (1, V18, ["Load(<snapshot/8d2284aced>, 0, 0) failed: open /r/snapshots/" + "8d" * 32
              + ": no such file or directory",
              '{"message_type":"exit_error","code":1,"message":"failed to load snapshot 8d2284ac: open '
              '/r/snapshots/' + "8d" * 32 + ': no such file or directory"}'], ResticOutcome.NOT_FOUND, None),
    (1, V18, ["Load(<data/ab12>) failed: read tcp 127.0.0.1:1->127.0.0.1:2: connection reset by peer",
              "Fatal: cannot dump file: ReadFull(<data/ab12>): connection reset by peer"], ResticOutcome.FATAL, None),
])
def test_damage_and_refused_credentials_are_told_from_restics_words(
    code: int, version: ResticVersion, stderr: list[str], expected: ResticOutcome, pack: str | None
) -> None:
    assert classify_exit(code, version, stderr) is expected
    damage = damage_in(stderr)
    assert (damage.pack if damage else None) == pack
    assert (damage is not None) == (expected is ResticOutcome.DAMAGED)
