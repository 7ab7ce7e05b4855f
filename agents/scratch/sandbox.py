"""Where a tenant's data is restored: a bubblewrap sandbox, as a dedicated unprivileged account.

A tenant controls what is inside their files and databases, and restoring a
database runs it through loaders and servers that can execute code (``COPY ...
TO PROGRAM``, the ``mariadb`` client's ``\\!``, functions in the dump). So every
throwaway server and loader runs in ``bwrap`` with:

* its own mount, PID, IPC, UTS and network namespaces -- **no network** (a
  throwaway instance listens on a unix socket only; the agent reaches it
  through the file system);
* nothing of the host visible but ``/usr`` read-only and the one scratch
  directory of this verification, writable: no ``/etc`` (a two-line passwd and
  group of its own), no ``/home``, ``/root``, agent keys, password files,
  repository credentials or other tenants' scratch directories;
* the dedicated account (``scratch.*.run_as``, default ``drill-sandbox``), never
  root and never a database server's own account;
* for processes that handle tenant data, **no shell** and no other program than
  the one started: ``/usr/bin`` and ``/usr/sbin`` are empty but for it, so
  ``COPY ... TO PROGRAM`` and ``system()`` have nothing to run, and the attempt
  shows in the server's or loader's own words (``escape_markers`` of each engine).
  Setting up an empty instance (``initdb``, ``mariadb-install-db``) needs a shell
  and handles no tenant data; it runs in the same sandbox with ``/usr`` whole.

The agent running as root starts ``bwrap`` itself and drops to the account with
``setpriv`` inside; an agent running as another user starts ``bwrap`` as itself
(unprivileged user namespaces) and its instances run as that user.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from agents.scratch.account import InstanceAccount, ScratchUnusable

BWRAP = "bwrap"
SETPRIV = "/usr/bin/setpriv"
# Accounts that must never run a tenant's restored data: they own real servers or the machine.
FORBIDDEN_ACCOUNTS = frozenset({"root", "postgres", "mysql", "mariadb"})
ETC_FILES = ("passwd", "group", "hosts")  # all of /etc a sandbox sees


def make_sandbox_command(
    argv: Sequence[str], *, writable: str, etc: str, switch_to: tuple[int, int] | None,
    with_shell: bool, network: bool = False,
) -> tuple[str, ...]:
    """``argv`` run in a bubblewrap sandbox where only ``writable`` can be written (pure; see the module doc).

    ``etc``: a directory holding the sandbox's own ``passwd``, ``group`` and ``hosts``, its whole ``/etc``.

    ``switch_to``: (uid, gid) to drop to inside the sandbox (the agent is root), or None (it is not: bwrap makes a
    user namespace and the process keeps the agent's account). ``with_shell``: whether ``/usr/bin`` and ``/usr/sbin``
    are visible whole (setting up an empty instance) or only ``argv[0]`` is (anything handling tenant data).
    ``network``: keep the host's network (a loader that must reach a scratch server); otherwise none.
    """
    command = [BWRAP]
    if switch_to is not None:
        # As root: namespaces without a user namespace, so that setpriv inside can take the account's ids.
        command += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not network:
            command.append("--unshare-net")
    else:
        command += ["--unshare-all"] + (["--share-net"] if network else [])
    command += ["--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    program = argv[0]
    if not with_shell:
        command += ["--tmpfs", "/usr/bin", "--tmpfs", "/usr/sbin", "--tmpfs", "/usr/local"]
        for binary in dict.fromkeys([program, *([SETPRIV] if switch_to is not None else [])]):
            if binary.startswith(("/usr/bin/", "/usr/sbin/", "/usr/local/")):
                command += ["--ro-bind", binary, binary]
    command += ["--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev",
                "--tmpfs", "/tmp",  # noqa: S108 -- an empty tmpfs of the sandbox's own
                "--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        command += ["--ro-bind", os.path.join(etc, name), f"/etc/{name}"]
    # bwrap makes missing parents 0700: the account must be able to pass through to its directory.
    for parent in _ancestors(writable):
        command += ["--perms", "0755", "--dir", parent]
    command += ["--bind", writable, writable, "--chdir", writable, "--clearenv",
                "--setenv", "PATH", "/usr/bin:/bin:/usr/sbin:/sbin", "--setenv", "HOME", writable,
                "--setenv", "TMPDIR", writable,  # /tmp is an empty, read-only tmpfs of the sandbox's own
                "--setenv", "LANG", "C.UTF-8", "--"]
    if switch_to is not None:
        uid, gid = switch_to
        command += [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--"]
    return (*command, *argv)


def _ancestors(path: str) -> list[str]:
    """``/a``, ``/a/b`` for ``/a/b/c``: the directories above ``path``, outermost first."""
    parts = os.path.normpath(path).strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class Sandbox:
    """The sandbox of one throwaway instance: its account and its one writable directory."""

    account: InstanceAccount
    directory: str  # owned by the account; everything the instance writes goes here
    etc: str  # the sandbox's /etc (outside the writable directory: the account cannot change it)

    @classmethod
    def prepare(cls, account: InstanceAccount, directory: str, etc: str) -> Sandbox:
        """A sandbox writing only to ``directory``; its passwd, group and hosts files are written to ``etc``.

        Raises :class:`ScratchUnusable` when bubblewrap is missing or the account may not run tenant data.
        """
        if shutil.which(BWRAP) is None:
            raise ScratchUnusable("bubblewrap (bwrap) is not installed: restores of untrusted data run only in its "
                                  "sandbox (apt-get install bubblewrap)")
        if account.name in FORBIDDEN_ACCOUNTS or (account.switch and account.uid == 0):
            raise ScratchUnusable(f"throwaway instances may not run as {account.name!r}: set scratch run_as to a "
                                  "dedicated unprivileged account (e.g. drill-sandbox, with no login shell)")
        os.makedirs(etc, mode=0o755, exist_ok=True)
        os.chmod(etc, 0o755)  # noqa: S103 -- the account reads them inside the sandbox; nothing in them is secret
        contents = {"passwd": f"{account.name}:x:{account.uid}:{account.gid}::{directory}:/nonexistent\n",
                    "group": f"{account.name}:x:{account.gid}:\n",
                    "hosts": "127.0.0.1 localhost\n"}  # installers look up the host name; nothing else resolves
        for name, text in contents.items():
            path = os.path.join(etc, name)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(path, 0o644)
        return cls(account, directory, etc)

    def wrap(self, argv: Sequence[str], *, with_shell: bool = False, network: bool = False) -> tuple[str, ...]:
        """``argv`` run in this sandbox (``argv[0]`` resolved on PATH, as the sandbox has no PATH of the host's)."""
        program = shutil.which(argv[0]) or argv[0]
        switch = (self.account.uid, self.account.gid) if self.account.switch else None
        return make_sandbox_command((program, *argv[1:]), writable=self.directory, etc=self.etc, switch_to=switch,
                                    with_shell=with_shell, network=network)
