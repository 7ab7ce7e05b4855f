"""The schedule daemon: due work from persisted state and the clock, on real restic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

from agents.daemon import run_due_policies
from agents.state import StateDir
from tests.support.configs import Workspace, write_files
from tests.support.jobs import doc

ZONE = datetime.now().astimezone().tzinfo


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZONE)


def test_due_runs_neither_repeat_nor_skip_across_restarts(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    policies = {"nightly": {"targets": ["documents"], "repository": "local",
                            "schedule": {"full": "sun 01:00", "incremental": "daily 01:00"}}}
    path = workspace.write_config({"local": workspace.local_repository("local")}, policies=policies)
    config = workspace.load(path)
    subprocess.run([config.restic_binary, "init"], check=True, capture_output=True,
                   env={**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
                        "RESTIC_PASSWORD_FILE": workspace.password_file})
    state = StateDir(config.state_dir)

    # First start, Saturday noon: a baseline, no backup.
    assert run_due_policies(config, clock=lambda: _at(28, 12)) == []
    assert state.last_handled_slot("nightly") == _at(28, 12)

    # Sunday 01:05: full and incremental share the slot; one run, the full.
    [sunday] = run_due_policies(config, clock=lambda: _at(29, 1, 5))
    assert doc(sunday.record)["level"]["effective"] == "full"
    assert state.last_handled_slot("nightly") == _at(29, 1)

    # A restart a minute later: nothing is repeated.
    assert run_due_policies(config, clock=lambda: _at(29, 1, 6)) == []

    # Down until Wednesday 09:00 (Monday, Tuesday and Wednesday missed): one catch-up run.
    [catch_up] = run_due_policies(config, clock=lambda: datetime(2026, 12, 2, 9, 0, tzinfo=ZONE))
    assert doc(catch_up.record)["level"]["effective"] == "incremental"
    assert catch_up.record.outcome == "success"  # type: ignore[union-attr]
    assert state.last_handled_slot("nightly") == datetime(2026, 12, 2, 1, 0, tzinfo=ZONE)
    assert run_due_policies(config, clock=lambda: datetime(2026, 12, 2, 9, 30, tzinfo=ZONE)) == []


def test_run_command_stops_cleanly_on_sigterm(workspace: Workspace) -> None:
    policies = {"nightly": {"targets": ["documents"], "repository": "local", "schedule": {"full": "hourly :00"}}}
    path = workspace.write_config({"local": workspace.local_repository("local")}, policies=policies)
    daemon = subprocess.Popen([sys.executable, "-m", "agents.cli", "--log-level", "info", "run", "--config", path,
                               "--tick", "1"], stderr=subprocess.PIPE, text=True)
    schedule_file = os.path.join(workspace.state_dir, "schedule.json")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not os.path.exists(schedule_file):
        time.sleep(0.05)
    daemon.send_signal(signal.SIGTERM)
    _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 130, stderr
    assert "stopping: interrupted by SIGTERM" in stderr
    with open(schedule_file) as handle:
        assert json.load(handle)["nightly"]["outcome"] == "baseline"
