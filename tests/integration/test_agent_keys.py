"""The agent's own repository key on real restic (both versions), a local repository and S3: restic opens the
repository with it, the operator's key is untouched, and a configured password that went stale still fails."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess

import pytest

from agents.config.model import AgentConfig
from agents.repositories import open_repository
from agents.restic.agentkey import AGENT_N, MAX_KEYS_BEFORE_OURS, seal_key_file
from agents.restic.keyfolders import LocalKeyFolder
from agents.restic.runner import Restic, ResticError
from tests.support.components import S3Server
from tests.support.configs import Workspace


def _keys(config: AgentConfig, name: str = "local") -> list[dict[str, object]]:
    """``restic key list --json`` run as an operator would: with the configured password, no key hint."""
    repository = config.repositories[name]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **repository.env,
           **repository.restic_environment()}
    done = subprocess.run([config.restic_binary, "key", "list", "--json", "--no-cache"], env=env,
                          capture_output=True, text=True, check=True)
    keys: list[dict[str, object]] = json.loads(done.stdout)
    return keys


def _initialised(workspace: Workspace, repository: dict[str, object], **restic: object) -> AgentConfig:
    path = workspace.write_config({"local": repository})
    if restic:
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace("restic:\n", "restic:\n" + "".join(f"  {k}: {str(v).lower()}\n"
                                                                        for k, v in restic.items()), 1))
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    return config


def test_a_local_repository_is_opened_with_the_agents_own_key(workspace: Workspace) -> None:
    config = _initialised(workspace, workspace.local_repository("local"))
    restic = open_repository(config, "local")
    opened = restic.repository
    assert opened.key_hint is not None and opened.password_file != workspace.password_file
    assert os.stat(opened.password_file).st_mode & 0o077 == 0  # the agent's secret: its owner's alone
    assert restic.snapshots() == []  # restic opens the repository with it
    keys = _keys(config)
    assert len(keys) == 2 and sum(k.get("current") is True for k in keys) == 1  # the operator's key still opens
    [ours] = [k for k in keys if k["userName"] == "drill-agent"]
    assert ours["hostName"] == "testhost" and opened.key_hint.startswith(str(ours["id"]))
    with open(os.path.join(str(opened.local_path), "keys", opened.key_hint), "rb") as handle:
        assert json.load(handle)["N"] == AGENT_N
    assert open_repository(config, "local").repository.key_hint == opened.key_hint  # kept, not made again


def test_a_stale_configured_password_still_fails_the_jobs(workspace: Workspace) -> None:
    config = _initialised(workspace, workspace.local_repository("local"))
    made = open_repository(config, "local").repository.key_hint
    with open(workspace.password_file) as handle:
        right = handle.read()
    with open(workspace.password_file, "w") as handle:
        handle.write("the operator changed it and mistyped it\n")
    stale = open_repository(config, "local")
    assert stale.repository.key_hint is None  # the agent's key is not used to hide it
    with pytest.raises(ResticError) as failed:
        stale.snapshots()
    assert "password" in failed.value.describe().lower()
    with open(workspace.password_file, "w") as handle:
        handle.write(right)
    assert open_repository(config, "local").repository.key_hint == made  # the same key, proven again


def test_a_removed_agent_key_is_made_again(workspace: Workspace) -> None:
    config = _initialised(workspace, workspace.local_repository("local"))
    first = open_repository(config, "local").repository.key_hint
    assert first is not None
    repository = config.repositories["local"]
    env = {"PATH": os.environ["PATH"], **repository.restic_environment()}
    subprocess.run([config.restic_binary, "key", "remove", first, "--no-cache"], env=env, check=True,
                   capture_output=True)
    again = open_repository(config, "local")
    assert again.repository.key_hint not in (None, first)
    assert again.snapshots() == []
    assert [k["userName"] for k in _keys(config)].count("drill-agent") == 1


def test_a_key_removed_while_a_job_runs_leaves_the_job_on_the_configured_password(
    workspace: Workspace, caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    config = _initialised(workspace, workspace.local_repository("local"))
    job = open_repository(config, "local")  # a job of this agent opens the repository with its key ...
    repository = config.repositories["local"]
    env = {"PATH": os.environ["PATH"], **repository.restic_environment()}
    subprocess.run([config.restic_binary, "key", "remove", str(job.repository.key_hint), "--no-cache"], env=env,
                   check=True, capture_output=True)  # ... and an operator removes that key meanwhile
    assert job.snapshots() == []  # the command ran again with the configured password, not failed
    assert job.repository.key_hint is None and job.repository.password_file == repository.password_file
    assert caplog.text.count("no longer opens repository local") == 1

    # A command fed from a pipe is not run twice (restic may have read from it): it fails, the next one goes on.
    piped = open_repository(config, "local")
    subprocess.run([config.restic_binary, "key", "remove", str(piped.repository.key_hint), "--no-cache"], env=env,
                   check=True, capture_output=True)
    with open(os.path.join(workspace.root, "dump.sql"), "wb+") as stream:
        stream.write(b"a dump")
        stream.seek(0)
        with pytest.raises(ResticError) as failed:
            piped.backup_stdin(stream, filename="/db.sql", host="testhost", tags=["t"])
    assert failed.value.finding_code == "wrong_password"
    assert piped.snapshots() == [] and piped.repository.key_hint is None


def test_agent_keys_can_be_turned_off(workspace: Workspace) -> None:
    config = _initialised(workspace, workspace.local_repository("local"), agent_keys=False)
    assert open_repository(config, "local").repository.key_hint is None
    assert len(_keys(config)) == 1


def test_an_s3_repository_is_opened_with_the_agents_own_key(workspace: Workspace, s3: S3Server) -> None:
    s3.make_bucket("backups")
    config = _initialised(workspace, workspace.s3_repository(s3, "backups", "app01"))
    restic = open_repository(config, "local")
    assert restic.repository.key_hint is not None
    assert restic.snapshots() == []
    assert [k["userName"] for k in _keys(config)].count("drill-agent") == 1 and len(_keys(config)) == 2
    stored = os.listdir(os.path.join(s3.data_dir, "backups", "app01", "keys"))
    assert restic.repository.key_hint in stored


def test_a_repository_with_many_keys_gets_none_of_the_agents(workspace: Workspace) -> None:
    config = _initialised(workspace, workspace.local_repository("local"))
    folder = LocalKeyFolder(os.path.join(workspace.root, "repo-local", "keys"))
    for _ in range(MAX_KEYS_BEFORE_OURS - 1):  # other agents' keys, say: restic tries at most 20 without a hint
        document = seal_key_file(b"{}", secrets.token_bytes(16), "elsewhere")
        folder.write(hashlib.sha256(document).hexdigest(), document)
    restic = open_repository(config, "local")
    assert restic.repository.key_hint is None
    assert restic.snapshots() == []  # the job goes on, with the configured password
    with open(os.path.join(workspace.state_dir, "repository-keys", "local.json")) as handle:
        assert "declined" in json.load(handle)  # not tried again (a scrypt each time) for an hour
