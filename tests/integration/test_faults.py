"""Bad input and faults on real components: each one must be detected and recorded, never passed as success."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from agents.config.model import AgentConfig
from agents.contract.records import AgentRecord, AgentRecordKind, SignedRecord
from agents.jobs import catalog
from agents.jobs.dumpstream import PendingStdinBackup
from agents.jobs.leftovers import clean_up_killed_jobs
from agents.jobs.restat import ReadSinceBase
from agents.journal import Journal
from agents.outbox import Outbox
from agents.restic import runner
from agents.restic.exitcodes import ResticOutcome
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from policies.levels import Level
from tests.support.components import S3Server, free_port
from tests.support.configs import Workspace, write_files
from tests.support.jobs import backup, doc, verify


def _files_in(directory: str) -> list[str]:
    """Names in ``directory``; rclone's S3 removes a prefix's folder when it empties."""
    return os.listdir(directory) if os.path.isdir(directory) else []


def _codes(record: AgentRecord) -> set[str]:
    return {f.code for f in record.findings}


def _init(workspace: Workspace, path: str) -> None:
    config = workspace.load(path)
    for repository in config.repositories.values():
        Restic(config.restic_binary, repository).init()


def _big_files(root: str, count: int, size: int) -> None:
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        with open(os.path.join(root, f"blob{i:03d}.bin"), "wb") as handle:
            handle.write(os.urandom(size))


def test_wrong_password_fails_with_a_typed_finding(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    with open(workspace.password_file, "w") as handle:
        handle.write("not the password\n")
    [record] = backup(workspace.load(path), "nightly", Level.FULL)
    assert record.outcome == "failed"
    assert "wrong_password" in _codes(record)
    assert "not the password" not in json.dumps(doc(record))


def test_missing_bucket_fails_promptly(workspace: Workspace, s3: S3Server) -> None:
    write_files(workspace.data, {"a": "1"})
    path = workspace.write_config({"local": workspace.s3_repository(s3, "no-such-bucket", "app01",
                                                                    connect_timeout=8)})
    started = time.monotonic()
    [record] = backup(workspace.load(path), "nightly", Level.FULL)
    assert time.monotonic() - started < 25
    assert record.outcome == "failed"
    assert "repository_missing" in _codes(record)
    message = next(f.message for f in record.findings if f.code == "repository_missing")
    assert "bucket does not exist" in message.lower()


def test_wrong_s3_credentials_are_named_as_such(workspace: Workspace, s3: S3Server) -> None:
    write_files(workspace.data, {"a": "1"})
    s3.make_bucket("backups")
    path = workspace.write_config({"local": workspace.s3_repository(s3, "backups", "app01", connect_timeout=8)})
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    for key, secret in ((s3.access_key, "not-the-secret"), ("nobody", s3.secret_key)):
        with open(config.raw["repositories"]["local"]["env_file"], "w") as handle:
            handle.write(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={secret}\n")
        [record] = backup(workspace.load(path), "nightly", Level.FULL)
        assert record.outcome == "failed"
        assert _codes(record) == {"repository_access_denied"}, record.findings
        assert secret not in json.dumps(doc(record))


def test_unreachable_endpoint_fails_within_connect_timeout(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    dead = S3Server(data_dir=os.path.join(workspace.root, "never-started"), port=free_port())
    path = workspace.write_config({"local": workspace.s3_repository(dead, "backups", "app01", connect_timeout=5)})
    # A verification's first command is its check (the listing runs beside it): bounded the same way.
    started = time.monotonic()
    [verified] = verify(workspace.load(path), "documents")
    assert time.monotonic() - started < 25
    assert verified.verdict == "error" and verified.check is not None and verified.check.passed is None
    assert [f.code for f in verified.findings] == ["could_not_verify"]  # said once, by the listing beside it
    started = time.monotonic()
    [record] = backup(workspace.load(path), "nightly", Level.FULL)
    assert time.monotonic() - started < 25
    assert record.outcome == "failed"
    assert "repository_unreachable" in _codes(record)


def test_s3_server_killed_mid_backup_then_next_run_succeeds(workspace: Workspace, s3: S3Server) -> None:
    _big_files(workspace.data, 40, 2_000_000)
    s3.make_bucket("backups")
    policies = {"nightly": {"targets": ["documents"], "repository": "local", "retention": {"full": 1}}}
    path = workspace.write_config(
        {"local": workspace.s3_repository(s3, "backups", "app01", connect_timeout=10, stall_timeout=4)},
        policies=policies,
    )
    _init(workspace, path)
    config = workspace.load(path)
    data_dir = os.path.join(s3.data_dir, "backups", "app01", "data")

    def kill_when_uploading() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.isdir(data_dir) and any(files for _, _, files in os.walk(data_dir)):
                s3.stop()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_uploading)
    killer.start()
    started = time.monotonic()
    [failed] = backup(config, "nightly", Level.FULL)
    killer.join()
    assert time.monotonic() - started < 120
    assert failed.outcome == "failed"
    assert _codes(failed) & {"repository_unreachable", "restic_failed"}, doc(failed)["findings"]

    locks = os.path.join(s3.data_dir, "backups", "app01", "locks")
    assert _files_in(locks), "the stopped restic could not remove its lock while S3 was down"

    s3.start()
    [ok] = backup(config, "nightly", Level.FULL)
    assert ok.outcome == "success", doc(ok)["findings"]
    assert _files_in(locks) == []  # the next job removed the stale lock first
    # a second backup makes retention forget and prune (an exclusive lock): nothing blocks it
    [again] = backup(config, "nightly", Level.FULL)
    assert again.outcome == "success", doc(again)["findings"]
    assert doc(again)["retention"]["local"] == {"forgotten": [doc(ok)["snapshot"]["id"]],
                                                          "kept": 1}


def test_sigterm_stops_restic_cleanly_and_leaves_no_lock(workspace: Workspace) -> None:
    _big_files(workspace.data, 60, 2_000_000)
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    repo = workspace.local_repository("local")["url"]
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "backup", "--config", path, "--policy", "nightly", "--level", "full",
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.listdir(os.path.join(repo, "locks")):
        time.sleep(0.02)
    assert os.listdir(os.path.join(repo, "locks")), "restic never started"
    time.sleep(0.3)
    agent.send_signal(signal.SIGTERM)
    stdout, _ = agent.communicate(timeout=60)
    assert agent.returncode == 130
    [document] = json.loads(stdout)
    assert document["outcome"] == "failed"
    assert "interrupted" in {f["code"] for f in document["findings"]}
    assert os.listdir(os.path.join(repo, "locks")) == []
    [again] = backup(workspace.load(path), "nightly", Level.INCREMENTAL)
    assert again.outcome == "success"
    # the interrupted job left no usable base: the incremental was upgraded to full
    assert doc(again)["level"]["effective"] == "full"


def test_one_missing_source_path_makes_a_partial_backup(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    missing = os.path.join(workspace.root, "not-there")
    targets = {"documents": {"kind": "files", "paths": [workspace.data, missing]}}
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets=targets)
    _init(workspace, path)
    [record] = backup(workspace.load(path), "nightly", Level.FULL)
    assert record.outcome == "partial"
    finding = next(f for f in record.findings if f.code == "source_missing")
    assert finding.subject == missing
    assert doc(record)["snapshot"]["id"]


def test_all_sources_missing_fails_without_a_snapshot(workspace: Workspace) -> None:
    targets = {"documents": {"kind": "files", "paths": [os.path.join(workspace.root, "gone")]}}
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets=targets)
    _init(workspace, path)
    [record] = backup(workspace.load(path), "nightly", Level.FULL)
    assert record.outcome == "failed"
    assert {"source_missing", "nothing_to_back_up"} <= _codes(record)
    assert doc(record)["snapshot"] is None


def test_unreadable_file_makes_a_partial_backup_naming_it(workspace: Workspace) -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is required"
    write_files(workspace.data, {"ok.txt": "fine", "secret.txt": "locked"})
    secret = os.path.join(workspace.data, "secret.txt")
    os.chmod(secret, 0)
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    # Run the agent without the capability to bypass file permissions, as a non-root agent would.
    command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable, "-m", "agents.cli",
               "backup", "--config", path, "--policy", "nightly", "--level", "full", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    [document] = json.loads(result.stdout)
    assert document["outcome"] == "partial"
    unreadable = [f for f in document["findings"] if f["code"] == "unreadable"]
    assert [f["subject"] for f in unreadable] == [secret]
    assert document["manifest"]["unreadable"] == 1 and document["manifest"]["files"] == 1


def test_a_file_changed_after_the_agent_kept_its_hash_and_before_restic_read_it_is_named(
    workspace: Workspace,
) -> None:
    # An incremental re-stats only the files it or restic read; this one neither hashed (its stat was the base's)
    # nor re-stat'ed unless restic's own report of it is used. A wrapper changes it just before restic starts.
    write_files(workspace.data, {"quiet.txt": "q", "late.log": "first line\n", "other.txt": "o"})
    late = os.path.join(workspace.data, "late.log")
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    [full] = backup(workspace.load(path), "nightly", Level.FULL)
    assert full.outcome == "success" and not _codes(full) & {"changed_during_backup"}
    wrapper = os.path.join(workspace.root, "restic-that-appends")
    with open(wrapper, "w") as handle:
        handle.write(f'#!/bin/sh\nfor arg in "$@"; do [ "$arg" = backup ] && echo late >> {shlex.quote(late)}; done\n'
                     f'exec {shlex.quote(workspace.restic)} "$@"\n')
    os.chmod(wrapper, 0o755)
    workspace.restic = wrapper
    [incremental] = backup(workspace.load(workspace.write_config({"local": workspace.local_repository("local")})),
                           "nightly", Level.INCREMENTAL)
    assert incremental.manifest is not None and incremental.manifest.reused_hashes == 3
    assert incremental.outcome == "success"
    changed = [f for f in incremental.findings if f.code == "changed_during_backup"]
    assert [f.subject for f in changed] == [late]
    assert incremental.changed_during_backup == [late]


def test_a_files_backup_that_fails_once_its_data_is_stored_leaves_no_snapshot(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Data without its manifest, or a pair no record names, is no backup: each is forgotten, never left to be
    # listed, kept by retention and refused as a base. Two faults a real restic and disk do not make on demand:
    # a restic that refuses the manifest's stream, and a reading of the stored manifest that fails (EIO).
    write_files(workspace.data, {"a.txt": "a", "b.txt": "b"})
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    config = workspace.load(path)
    restic = Restic(config.restic_binary, config.repositories["local"])
    real = workspace.restic
    refusing = os.path.join(workspace.root, "restic-refusing-stdin")
    with open(refusing, "w") as handle:
        handle.write('#!/bin/sh\ncase " $* " in *" --stdin "*) echo "Fatal: injected refusal" >&2; exit 1;; esac\n'
                     f'exec {shlex.quote(real)} "$@"\n')
    os.chmod(refusing, 0o755)
    workspace.restic = refusing
    [refused] = backup(workspace.load(workspace.write_config({"local": workspace.local_repository("local")})),
                       "nightly", Level.FULL)
    assert refused.outcome == "failed" and "manifest_store_failed" in _codes(refused)
    assert restic.snapshots() == []

    workspace.restic = real

    def failing_read(*_args: object) -> list[str]:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ReadSinceBase, "find_changed", failing_read)
    [broken] = backup(workspace.load(workspace.write_config({"local": workspace.local_repository("local")})),
                      "nightly", Level.FULL)
    assert broken.outcome == "failed" and "internal_error" in _codes(broken)
    assert "Input/output error" in next(f.message for f in broken.findings if f.code == "internal_error")
    assert broken.snapshot is None and broken.manifest is None  # the failed record names nothing it forgot
    assert restic.snapshots() == []
    assert os.listdir(StateDir(config.state_dir).sub("manifests")) == []  # nor the agent's copy of its manifest


def test_a_backup_whose_record_cannot_be_written_has_its_snapshots_forgotten_by_the_next_clean_up(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pair is stored and named, then the record cannot be written (a full disk, injected: the real one is not
    # filled on demand). A snapshot no record vouches for is no backup: the daemon lives on, so the job's note is
    # kept for the next clean-up instead of waiting for the process to die.
    write_files(workspace.data, {"a.txt": "a"})
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    config = workspace.load(path)
    restic = Restic(config.restic_binary, config.repositories["local"])
    real_write = Outbox.write

    def disk_full(outbox: Outbox, record: AgentRecordKind) -> SignedRecord:
        if record.kind == "backup":
            raise OSError(28, "No space left on device")
        return real_write(outbox, record)

    monkeypatch.setattr(Outbox, "write", disk_full)
    with pytest.raises(OSError, match="could not be written"):
        backup(config, "nightly", Level.FULL)
    monkeypatch.undo()
    assert len(restic.snapshots()) == 2  # data and manifest, which no record names
    [cleared] = clean_up_killed_jobs(config)
    assert restic.snapshots() == []
    assert clean_up_killed_jobs(config) == []  # the note went with them
    [record] = backup(config, "nightly", Level.FULL)  # and the next backup is a backup like any other
    assert record.outcome == "success" and record.job.id != cleared
    named = {s.id for s in restic.snapshots()}

    # A job whose record was written but that ended by an exception (here a snapshot of its job's tag no record
    # names, as restic's last one would be had its report's reader failed after restic ended): only that goes.
    stray = os.path.join(workspace.root, "stray")
    write_files(workspace.root, {"stray": "stray"})
    with open(stray, "rb") as stream:
        restic.backup_stdin(stream, filename="/stray", host=config.host, tags=[catalog.tag("job", record.job.id)])
    with pytest.raises(RuntimeError), Journal(StateDir(config.state_dir)).running(record.job.id, "local", []):
        raise RuntimeError("ended after its record was written")
    assert clean_up_killed_jobs(config) == [record.job.id]
    assert {s.id for s in restic.snapshots()} == named


def test_file_appended_during_backup_is_recorded_as_changed(workspace: Workspace) -> None:
    _big_files(workspace.data, 15, 2_000_000)
    live = os.path.join(workspace.data, "app.log")
    stop = threading.Event()

    def append() -> None:
        with open(live, "a") as handle:
            while not stop.is_set():
                handle.write("a log line\n")
                handle.flush()
                time.sleep(0.002)

    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    writer = threading.Thread(target=append)
    writer.start()
    try:
        time.sleep(0.05)
        [record] = backup(workspace.load(path), "nightly", Level.FULL)
    finally:
        stop.set()
        writer.join()
    assert record.outcome == "success"  # a warning, not a failure
    changed = [f for f in record.findings if f.code == "changed_during_backup"]
    assert [f.subject for f in changed] == [live]
    assert changed[0].severity == "warning"


def _impatient_repository(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> AgentConfig:
    """A config whose local repository (made here) waits one second for a lock, retrying every fifth of one."""
    monkeypatch.setattr(runner, "LOCK_RETRY_WAITS", (0.2,))
    monkeypatch.setattr(runner, "LOCK_RETRY_EVERY", 0.5)
    path = workspace.write_config({"local": {**workspace.local_repository("local"), "lock_wait": 1}})
    _init(workspace, path)
    return workspace.load(path)


def test_snapshots_are_listed_beside_a_check_that_holds_the_exclusive_lock(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A verification lists the snapshots while its own `restic check` holds the repository alone.
    config = _impatient_repository(workspace, monkeypatch)
    [record] = backup(config, "nightly", Level.FULL)
    assert record.snapshot is not None
    repository = config.repositories["local"]
    locks = os.path.join(repository.url, "locks")
    for _ in range(10):  # a check of so small a repository may end before it is stopped
        checker = subprocess.Popen([config.restic_binary, "check", "--read-data"], stdout=subprocess.PIPE,
                                   env={**os.environ, **repository.restic_environment()})
        assert checker.stdout is not None
        # Its lock is whole once it says "load indexes" (restic ignores a lock file still being written).
        while (line := checker.stdout.readline()) and not line.startswith(b"load indexes"):
            pass
        os.kill(checker.pid, signal.SIGSTOP)  # holding its exclusive lock for as long as the test needs
        if line and _files_in(locks):
            break
        os.kill(checker.pid, signal.SIGCONT)
        checker.communicate(timeout=60)
    try:
        assert _files_in(locks), "the check took no lock"
        restic = Restic(config.restic_binary, repository)
        with pytest.raises(ResticError) as locked:
            restic.snapshots()
        assert locked.value.outcome is ResticOutcome.LOCKED
        assert record.manifest is not None
        assert sorted(s.id for s in restic.snapshots(first_contact=True, beside_check=True)) == sorted(
            [record.snapshot.id, record.manifest.snapshot_id])
    finally:
        os.kill(checker.pid, signal.SIGCONT)
        checker.communicate(timeout=60)
        assert checker.returncode == 0


def test_a_command_waits_for_another_restics_lock_up_to_the_repositorys_lock_wait(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backup from a pipe that stays open holds its (shared) lock; `restic check` needs the repository alone.
    config = _impatient_repository(workspace, monkeypatch)
    repository = config.repositories["local"]
    locks = os.path.join(repository.url, "locks")
    holder = subprocess.Popen([config.restic_binary, "backup", "-q", "--stdin", "--stdin-filename", "held"],
                              stdin=subprocess.PIPE, env={**os.environ, **repository.restic_environment()})
    assert holder.stdin is not None
    holder.stdin.write(b"data from a pipe that stays open\n")  # restic stores no empty stdin
    holder.stdin.flush()
    try:
        deadline = time.monotonic() + 30
        while not _files_in(locks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _files_in(locks), "the holding backup took no lock"
        with pytest.raises(ResticError) as impatient:
            Restic(config.restic_binary, repository).check(None)
        assert impatient.value.outcome is ResticOutcome.LOCKED and "lock_wait" in str(impatient.value)
        # As a verification's first command: each attempt must open the repository within connect_timeout, and
        # waiting for the lock longer than that is no stall.
        patient = Restic(config.restic_binary, dataclasses.replace(repository, lock_wait=30, connect_timeout=4))
        release = threading.Timer(6.0, holder.stdin.close)
        release.start()
        started = time.monotonic()
        assert patient.check(None, first_contact=True) == (True, ())
        assert time.monotonic() - started >= 5.5  # it waited for the lock rather than failing
        release.join()
    finally:
        if not holder.stdin.closed:
            holder.stdin.close()
        assert holder.wait(timeout=60) == 0


def test_a_restic_started_before_its_content_waits_past_connect_timeout_and_stores_nothing_when_abandoned(
    workspace: Workspace,
) -> None:
    # A dump's manifest: its restic starts with the job and waits on stdin while the dump runs.
    path = workspace.write_config({"local": workspace.local_repository("local")})
    _init(workspace, path)
    repository = dataclasses.replace(workspace.load(path).repositories["local"], connect_timeout=2)
    restic = Restic(workspace.load(path).restic_binary, repository)
    tags = ["drill.job=pending", "drill.part=manifest"]
    with PendingStdinBackup(restic, filename="app.manifest.json", host="vm", tags=tags):
        time.sleep(1.0)  # restic has opened the repository and waits
    assert restic.snapshots() == []
    assert _files_in(os.path.join(repository.url, "locks")) == []  # killed, and its lock removed
    with PendingStdinBackup(restic, filename="app.manifest.json", host="vm", tags=tags) as pending:
        time.sleep(3.0)  # longer than connect_timeout: a wait on purpose is no stall
        snapshot_id = restic.identify(pending.store(b'{"tables":[]}'))[0]
    [stored] = restic.snapshots()
    assert stored.id == snapshot_id and set(tags) <= set(stored.tags) and stored.paths == ("/app.manifest.json",)
    assert restic.dump(snapshot_id, "/app.manifest.json") == b'{"tables":[]}'
    with pytest.raises(RuntimeError):
        pending.store(b"twice")
