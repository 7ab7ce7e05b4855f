"""The agent key's life on a repository folder built here with restic's key-file format (restic itself opens these
keys in tests/integration/test_agent_keys.py): made once, kept, replaced after the operator's key rotated, never
given up for a failed read, and never the cause of a failed job."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from pathlib import Path

import pytest

from agents.restic import agentkey
from agents.restic.agentkey import open_key_file, seal_key_file, with_agent_key
from agents.restic.keyfolders import LocalKeyFolder
from agents.restic.repository import Repository
from agents.state import StateDir

MASTER = b'{"mac":{"k":"AAAAAAAAAAAAAAAAAAAAAA==","r":"AAAAAAAAAAAAAAAAAAAAAA=="},"encrypt":"AAAA"}'


class _Repo:
    """A repository's folder with an operator's key (cheap parameters here), its password file and a state."""

    def __init__(self, root: Path) -> None:
        self.path = root / "repo"
        (self.path / "keys").mkdir(parents=True)
        (self.path / "config").write_bytes(b"sealed config")
        os.chmod(self.path / "config", 0o400)
        self.password_file = root / "restic.pw"
        self.state = StateDir(str(root / "state"))
        self.operator = self.rotate()

    @property
    def keys(self) -> LocalKeyFolder:
        return LocalKeyFolder(str(self.path / "keys"))

    def rotate(self) -> str:
        """``restic key passwd``: a new operator key and password; the old key removed."""
        password = secrets.token_hex(8)
        document = seal_key_file(MASTER, password.encode(), "operator")
        key_id = hashlib.sha256(document).hexdigest()
        self.keys.write(key_id, document)
        if hasattr(self, "operator"):
            self.keys.remove(self.operator)
        self.password_file.write_text(password + "\n")
        self.operator = key_id
        return key_id

    def repository(self) -> Repository:
        return Repository(name="local", url=str(self.path), password_file=str(self.password_file))

    def opened(self) -> Repository:
        return with_agent_key(self.repository(), self.state, "app01")


@pytest.fixture
def repo(tmp_path: Path) -> _Repo:
    return _Repo(tmp_path)


def test_a_key_is_made_once_and_opens_the_same_master_key(repo: _Repo) -> None:
    opened = repo.opened()
    assert opened.key_hint is not None and opened.key_hint != repo.operator
    assert opened.password_file is not None and oct(os.stat(opened.password_file).st_mode & 0o777) == "0o600"
    with open(opened.password_file, "rb") as handle:
        own = handle.read()
    assert open_key_file(repo.keys.read(opened.key_hint, 1 << 16), own) == MASTER
    assert oct(os.stat(repo.path / "keys" / opened.key_hint).st_mode & 0o777) == "0o400"  # as the config
    assert repo.opened().key_hint == opened.key_hint
    assert sorted(repo.keys.names()) == sorted([repo.operator, opened.key_hint])


def test_after_the_operators_key_rotated_the_agents_key_is_replaced(repo: _Repo) -> None:
    before = repo.opened().key_hint
    assert before is not None
    repo.rotate()
    after = repo.opened()
    assert after.key_hint not in (None, before)
    assert sorted(repo.keys.names()) == sorted([repo.operator, str(after.key_hint)])  # the old one removed
    remaining = [name for name in os.listdir(repo.state.sub("repository-keys")) if name.endswith(".password")]
    assert remaining == [f"local.{after.key_hint}.password"]


def test_a_stale_configured_password_is_not_hidden_by_the_agents_key(repo: _Repo) -> None:
    assert repo.opened().key_hint is not None
    repo.password_file.write_text("mistyped\n")
    opened = repo.opened()
    assert opened.key_hint is None and opened.password_file == str(repo.password_file)


def test_planted_key_files_are_skipped(repo: _Repo) -> None:
    nested = b"[" * 100_000  # a JSON parser's recursion limit
    heavy = json.dumps({"kdf": "scrypt", "N": 1 << 20, "r": 8, "p": 16, "salt": "", "data": ""}).encode()
    for document in (nested, heavy, b"\x00" * 10):
        repo.keys.write(hashlib.sha256(document).hexdigest(), document)
    (repo.path / "keys" / "not-a-key-id").write_bytes(nested)
    assert repo.opened().key_hint is not None


def test_a_failed_read_does_not_give_up_the_key(repo: _Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    made = repo.opened().key_hint
    assert made is not None
    flaky = _FlakyFolder(str(repo.path / "keys"), made)
    monkeypatch.setattr(agentkey, "key_folder", lambda repository: flaky)
    repo.password_file.write_text(repo.password_file.read_text())  # a new version of the file: proven again
    assert repo.opened().key_hint is None  # the agent key's read failed: this job goes with the password
    assert made in repo.keys.names()
    monkeypatch.setattr(agentkey, "RETRY_AFTER", 0.0)
    repo.password_file.write_text(repo.password_file.read_text())
    assert repo.opened().key_hint is None  # still failing: declined again, the key still kept
    flaky.failing = False
    repo.password_file.write_text(repo.password_file.read_text())
    assert repo.opened().key_hint == made


def test_nothing_that_goes_wrong_fails_the_job(repo: _Repo, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(agentkey, "_usable_key", broken)
    assert repo.opened() == repo.repository()
    assert "RuntimeError: a bug" in caplog.text


def test_no_repository_yet_is_no_key_and_no_decline(tmp_path: Path) -> None:
    state = StateDir(str(tmp_path / "state"))
    (tmp_path / "pw").write_text("secret\n")
    repository = Repository(name="local", url=str(tmp_path / "nothing"), password_file=str(tmp_path / "pw"))
    assert with_agent_key(repository, state, "app01") == repository
    assert not os.path.exists(os.path.join(state.sub("repository-keys"), "local.json"))


class _FlakyFolder(LocalKeyFolder):
    """Reading one key file fails as a network read can (the fault injected)."""

    def __init__(self, path: str, failing_key: str) -> None:
        super().__init__(path)
        self.failing_key = failing_key
        self.failing = True

    def read(self, name: str, limit: int) -> bytes:
        if self.failing and name == self.failing_key:
            raise OSError(errno.EIO, "the read failed")
        return super().read(name, limit)
