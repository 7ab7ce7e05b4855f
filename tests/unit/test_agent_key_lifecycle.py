"""The agent key's life on a repository folder built here with restic's key-file format (restic itself opens these
keys in tests/integration/test_agent_keys.py): made once, kept, replaced after the operator's key rotated, never
given up for a failed read, and never the cause of a failed job."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
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

    def touch_password(self) -> None:
        """The same password, a new version of its file (restic strips the white space added)."""
        with open(self.password_file, "a") as handle:
            handle.write("\n")

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


def test_a_rotation_removes_the_old_key_even_when_no_new_one_can_be_made(repo: _Repo,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    before = repo.opened().key_hint
    monkeypatch.setattr(agentkey, "MAX_KEYS_BEFORE_OURS", 1)  # a repository that takes no more keys
    repo.rotate()
    assert repo.opened().key_hint is None
    assert before not in repo.keys.names()


def test_a_group_readable_repository_gets_a_group_readable_key(tmp_path: Path) -> None:
    repo = _Repo(tmp_path)
    os.chmod(repo.path / "config", 0o440)
    opened = repo.opened()
    assert oct(os.stat(repo.path / "keys" / str(opened.key_hint)).st_mode & 0o777) == "0o440"


def test_a_stale_configured_password_is_not_hidden_by_the_agents_key(repo: _Repo) -> None:
    assert repo.opened().key_hint is not None
    repo.password_file.write_text("mistyped\n")
    opened = repo.opened()
    assert opened.key_hint is None and opened.password_file == str(repo.password_file)


def _planted(repo: _Repo, number: int, document: bytes) -> None:
    """A key file named to sort before any real key id: read before the operator's."""
    repo.keys.write(f"{number:064x}", document)


def test_planted_key_files_are_skipped_without_computing(repo: _Repo) -> None:
    valid = json.loads(seal_key_file(MASTER, b"someone else", "elsewhere"))
    _planted(repo, 1, b"[" * 100_000)  # deeper than a JSON parser's recursion limit
    _planted(repo, 2, json.dumps({**valid, "N": 1 << 20, "r": 8, "p": 1}).encode())  # 1 GiB of memory
    _planted(repo, 3, json.dumps({**valid, "N": 1 << 14, "r": 8, "p": 1 << 10}).encode())  # minutes of work
    _planted(repo, 4, b"\x00" * 10)
    (repo.path / "keys" / "0-not-a-key-id").write_bytes(b"[" * 100_000)
    started = time.monotonic()
    assert repo.opened().key_hint is not None
    assert time.monotonic() - started < 5  # none of them was computed


def test_key_files_asking_for_too_much_work_in_all_are_not_all_tried(repo: _Repo,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agentkey, "MAX_TOTAL_WORK", agentkey.AGENT_N * agentkey.AGENT_R * 3 // 2)
    for number in (1, 2):  # each within the limits of one key; the two together past the budget
        _planted(repo, number, seal_key_file(MASTER, secrets.token_bytes(8), "elsewhere"))
    opened = repo.opened()
    assert opened.key_hint is None  # the operator's key was not reached: the configured password, as before


def test_a_failed_read_does_not_give_up_the_key(repo: _Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    made = repo.opened().key_hint
    assert made is not None
    flaky = _FlakyFolder(str(repo.path / "keys"), made)
    monkeypatch.setattr(agentkey, "key_folder", lambda repository: flaky)
    monkeypatch.setattr(agentkey, "RETRY_AFTER", 0.0)  # each open tries again
    repo.touch_password()  # a new version of the file: proven again
    assert repo.opened().key_hint is None  # the agent key's read failed: this job goes with the password
    assert made in repo.keys.names()
    assert repo.opened().key_hint is None  # still failing: declined again, the key still kept
    assert made in repo.keys.names()
    flaky.failing = False
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
