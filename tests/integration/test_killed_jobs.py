"""A job killed outright (kill -9) leaves nothing that outlives it: the agent undoes it before the next job.

A killed backup leaves its journal note, its staged manifest and list of paths, perhaps a snapshot no record
vouches for and a repository lock; a killed verification leaves its scratch directory (its sandboxed instance
dies with it). The next job clears all of it. SIGTERM during a verification exits 130, like every interruption.
These involve restic only as it is stopped, so they run with the distro restic alone -- except the killed database
backup, whose leftovers restic's version decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from agents.jobs.catalog import collect_backups
from agents.restic.runner import Restic
from policies.levels import Level
from tests.support.configs import Workspace
from tests.support.databases import ThrowawayDatabase, throwaway_database
from tests.support.engines import instances_left
from tests.support.jobs import backup


def _cmdlines() -> dict[int, str]:
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as handle:
            found[int(pid)] = handle.read().replace(b"\0", b" ").decode(errors="replace")
    return found


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def _agent(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agents.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_backup_is_undone_by_the_next_job(workspace_once: Workspace) -> None:
    workspace = workspace_once
    for number in range(60):
        with open(os.path.join(workspace.data, f"big{number}.bin"), "wb") as handle:
            handle.write(os.urandom(3_000_000))
    path = workspace.write_config({"local": workspace.local_repository("local")})
    config = workspace.load(path)
    restic = Restic(config.restic_binary, config.repositories["local"])
    restic.init()
    staging = os.path.join(workspace.state_dir, "staging")
    agent = _agent("backup", "--config", path, "--policy", "nightly", "--level", "full", "--quiet")
    _wait_for(lambda: any("restic" in line and "backup" in line and staging in line
                          for line in _cmdlines().values()), 60, "restic backup to start")
    orphans = [pid for pid, line in _cmdlines().items() if "restic" in line and staging in line]
    agent.kill()  # kill -9: no record, no clean-up
    agent.wait()
    # Gone for good, not a zombie: restic counts a lock stale only when its process no longer exists at all.
    _wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in orphans), 120, "the orphaned restic to end")
    journal = os.path.join(workspace.state_dir, "journal")
    assert len(os.listdir(journal)) == 1 and sorted(os.listdir(staging)), "the killed job left no trace to undo"
    outbox = os.path.join(workspace.state_dir, "outbox")
    assert not [n for n in os.listdir(outbox) if n.endswith(".json")] if os.path.isdir(outbox) else True

    [again] = backup(config, "nightly", Level.FULL)  # the next job undoes the killed one first
    assert again.outcome == "success", again.findings
    assert os.listdir(journal) == [] and os.listdir(staging) == []
    snapshots = restic.snapshots()
    # The orphan, if restic made it, is gone: what is left is the new job's data and manifest.
    assert sorted(s.tag_value("drill.part") or "" for s in snapshots) == ["files", "manifest"]
    assert {s.tag_value("drill.job") for s in snapshots} == {again.job.id}
    locks = subprocess.run([config.restic_binary, "list", "locks", "--no-lock"], capture_output=True, text=True,
                           env={**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
                                "RESTIC_PASSWORD_FILE": workspace.password_file}, check=True)
    assert locks.stdout.strip() == ""


def _postgres_config(workspace: Workspace, db: ThrowawayDatabase, *, scratch: str | None = None,
                     **policy: object) -> str:
    """A config backing up ``db`` (policy ``nightly`` into ``local``, with ``policy``'s extra settings); its path."""
    password_file = os.path.join(workspace.root, "pg.pw")
    with open(password_file, "w") as handle:
        handle.write(db.password + "\n")
    spec = {"kind": "postgres", "user": db.role, "password_file": password_file, "databases": [db.name],
            "globals": False}
    return workspace.write_config({"local": workspace.local_repository("local")}, targets={"app": spec},
                                  policies={"nightly": {"targets": ["app"], "repository": "local", **policy}},
                                  scratch={"directory": scratch} if scratch else None)


def test_a_killed_database_backup_is_undone_before_the_next_jobs_retention(workspace: Workspace) -> None:
    # Killed mid-dump, the agent leaves two restics whose stdin ends: the dump's, and the manifest's, waiting since
    # the job began. Whether either stores a snapshot is a race (each dies of SIGPIPE at its next status line), so
    # what they may leave -- a truncated dump and a manifest under the killed job's tags, which pair as a backup --
    # is written where they did not. The next job must forget both before its retention counts them.
    with throwaway_database(rows=300_000) as db:
        path = _postgres_config(workspace, db, retention={"full": 1})
        config = workspace.load(path)
        restic = Restic(config.restic_binary, config.repositories["local"])
        restic.init()
        agent = _agent("backup", "--config", path, "--policy", "nightly", "--level", "full", "--quiet")

        orphans: dict[int, list[str]] = {}

        def both_running() -> bool:
            # pg_dump and both restics: the manifest's (from the job's start) and the dump's (a thread starts it
            # beside pg_dump: either may be seen first)
            lines = _cmdlines()
            restics = {pid: line.split() for pid, line in lines.items() if "restic" in line and db.name in line}
            if len(restics) == 2 and any(f"{db.name}.manifest.json" in line for line in lines.values()) and any(
                    "pg_dump" in line and db.name in line for line in lines.values()):
                orphans.update(restics)
                return True
            return False

        _wait_for(both_running, 60, "the dump, its restic and the manifest's restic to run")
        agent.kill()
        agent.wait()
        _wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in orphans), 120, "the orphans to end")
        env = {**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
               "RESTIC_PASSWORD_FILE": workspace.password_file}
        present = {s.tag_value("drill.part") for s in restic.snapshots()}
        for argv in orphans.values():
            tags = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--tag"]
            if next(t for t in tags if t.startswith("drill.part=")).split("=")[1] not in present:
                subprocess.run([config.restic_binary, "backup", "-q", "--stdin", "--stdin-filename", "left",
                                "--host", config.host, *(a for t in tags for a in ("--tag", t))],
                               input=b"what was read before the end", env=env, check=True)
        assert len(collect_backups(restic.snapshots())) == 1  # the killed job's pair looks like a backup
        [again] = backup(config, "nightly", Level.FULL)
        assert again.outcome == "success", again.findings
        assert {s.tag_value("drill.job") for s in restic.snapshots()} == {again.job.id}
        # Nothing of the killed job was left to count: retention kept the new backup and had nothing to forget.
        assert again.retention["local"].forgotten == [] and again.retention["local"].kept == 1


def test_a_killed_verification_leaves_no_instance_and_its_scratch_is_reaped(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    workspace = workspace_once
    with throwaway_database(rows=300_000) as db:
        path = _postgres_config(workspace, db, scratch=scratch_dir)
        config = workspace.load(path)
        Restic(config.restic_binary, config.repositories["local"]).init()
        backup(config, "nightly", Level.FULL)
        verify = ("verify", "--config", path, "--repository", "local", "--target", "app", "--latest", "--json")
        agent = _agent(*verify)
        _wait_for(lambda: any("pg_restore" in line and scratch_dir in line for line in _cmdlines().values()), 120,
                  "the dump to be loaded into the throwaway instance")
        agent.kill()
        agent.wait()
        _wait_for(lambda: instances_left(scratch_dir) == [], 10, "the sandboxed instance to die with its agent")
        assert [n for n in os.listdir(scratch_dir) if n.startswith("verify-")], "nothing was left to reap"

        finished = subprocess.run([sys.executable, "-m", "agents.cli", *verify], capture_output=True, text=True,
                                  check=False)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert json.loads(finished.stdout)[0]["verdict"] == "passed"
    assert os.listdir(scratch_dir) == [], os.listdir(scratch_dir)
    assert instances_left(scratch_dir) == [], instances_left(scratch_dir)


def test_sigterm_during_a_verification_exits_130_with_a_failed_record(workspace_once: Workspace) -> None:
    workspace = workspace_once
    for number in range(40):
        with open(os.path.join(workspace.data, f"big{number}.bin"), "wb") as handle:
            handle.write(os.urandom(4_000_000))
    path = workspace.write_config({"local": workspace.local_repository("local")})
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    backup(config, "nightly", Level.FULL)
    agent = _agent("verify", "--config", path, "--repository", "local", "--target", "documents", "--latest",
                   "--read-data-parts", "1", "--json")
    scratch = os.path.join(workspace.state_dir, "scratch")
    _wait_for(lambda: any("restic" in line and "restore" in line and scratch in line
                          for line in _cmdlines().values()), 120, "the restore to start")
    agent.send_signal(signal.SIGTERM)
    out, _ = agent.communicate(timeout=120)
    assert agent.returncode == 130
    [record] = json.loads(out)
    assert record["outcome"] == "failed" and record["verdict"] != "passed"
    assert os.listdir(scratch) == []
