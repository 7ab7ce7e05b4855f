"""The restore sandbox, on the real bubblewrap: what a tenant's loader or server can see and do in it."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from agents.scratch.account import InstanceAccount, ScratchUnusable
from agents.scratch.sandbox import Sandbox, make_sandbox_command


@pytest.fixture
def sandbox(tmp_path: pathlib.Path) -> Sandbox:
    account = InstanceAccount.resolve("drill-sandbox")
    directory = tmp_path / "instance"
    account.make_own_directory(str(directory))
    return Sandbox.prepare(account, str(directory), str(tmp_path / "etc"))


def _run(sandbox: Sandbox, *argv: str, with_shell: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sandbox.wrap(argv, with_shell=with_shell), capture_output=True, text=True, check=False,
                          timeout=30)


def test_it_runs_as_the_dedicated_account_with_nothing_of_the_host(sandbox: Sandbox, tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "secret.key"  # beside the sandbox's directory, like an agent's key or a password file
    secret.write_text("do not read")
    assert _run(sandbox, "id", "-un").stdout.strip() == "drill-sandbox"
    assert _run(sandbox, "cat", "/etc/passwd").stdout.splitlines() == [
        f"drill-sandbox:x:{sandbox.account.uid}:{sandbox.account.gid}::{sandbox.directory}:/nonexistent"]
    for hidden in (str(secret), "/root", "/home", "/var/lib", "/etc/shadow", "/run"):
        assert _run(sandbox, "ls", hidden).returncode != 0, hidden
    assert _run(sandbox, "ls", "/bin/sh").returncode != 0  # no shell for what handles tenant data
    assert _run(sandbox, "ls", "/bin/sh", with_shell=True).returncode == 0  # setting up an instance has one


def test_it_writes_only_its_directory_and_has_no_network(sandbox: Sandbox) -> None:
    assert _run(sandbox, "touch", os.path.join(sandbox.directory, "allowed")).returncode == 0
    for elsewhere in ("/tmp/escaped", "/usr/escaped", "/escaped"):
        assert _run(sandbox, "touch", elsewhere).returncode != 0, elsewhere
    assert not os.path.exists("/tmp/escaped")
    links = _run(sandbox, "cat", "/proc/net/dev").stdout
    assert "lo:" in links and not [line for line in links.splitlines()[2:] if "lo:" not in line]


def test_root_and_server_accounts_may_not_run_tenant_data(tmp_path: pathlib.Path) -> None:
    for name in ("root", "postgres"):
        account = InstanceAccount(name, 0 if name == "root" else 101, 0, switch=True)
        with pytest.raises(ScratchUnusable, match="dedicated unprivileged account"):
            Sandbox.prepare(account, str(tmp_path), str(tmp_path / "etc"))


def test_the_command_drops_to_the_account_inside_and_binds_only_the_program() -> None:
    argv = make_sandbox_command(("/usr/bin/mariadb", "--sandbox"), writable="/s/v/my", etc="/s/v/etc",
                                switch_to=(999, 995), with_shell=False)
    assert argv[:6] == ("bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
                        "--unshare-net")
    binds = [argv[i + 1] for i, part in enumerate(argv) if part == "--ro-bind"]
    assert binds == ["/usr", "/usr/bin/mariadb", "/usr/bin/setpriv", "/s/v/etc/passwd", "/s/v/etc/group",
                     "/s/v/etc/hosts"]
    assert argv[argv.index("--bind"):argv.index("--bind") + 3] == ("--bind", "/s/v/my", "/s/v/my")
    assert argv[-7:] == ("--reuid=999", "--regid=995", "--clear-groups", "--no-new-privs", "--",
                         "/usr/bin/mariadb", "--sandbox")
    unprivileged = make_sandbox_command(("/usr/bin/id",), writable="/s", etc="/e", switch_to=None, with_shell=True,
                                        network=True)
    assert unprivileged[1:3] == ("--unshare-all", "--share-net") and "/usr/bin/setpriv" not in unprivileged
