"""The account a throwaway database instance runs as.

PostgreSQL refuses to run as root and MariaDB wants its own user, so an agent
running as root starts instances as ``run_as`` (``setpriv`` drops the
privileges); an agent running as anyone else starts them as itself. Either
way the instance's directory must be reachable by that account, which
:meth:`InstanceAccount.unreachable_ancestor` checks before anything starts.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass

from agents.contract.errors import DrillError


class ScratchUnusable(DrillError):
    """The scratch area or instance cannot be set up; the message says what to change."""

    code = "scratch_unusable"


@dataclass(frozen=True)
class InstanceAccount:
    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    switch: bool  # True: the agent is root and must drop to this account

    @classmethod
    def resolve(cls, run_as: str) -> InstanceAccount:
        """The account to run as: ``run_as`` when the agent is root, else the agent's own.

        Raises :class:`ScratchUnusable` when ``run_as`` does not exist.
        """
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return cls(me.pw_name, me.pw_uid, me.pw_gid, frozenset(os.getgroups()) | {me.pw_gid}, switch=False)
        try:
            entry = pwd.getpwnam(run_as)
        except KeyError:
            raise ScratchUnusable(
                f"user {run_as!r} (scratch run_as) does not exist; the throwaway instance cannot run as root"
            ) from None
        groups = {entry.pw_gid} | {g for g in os.getgrouplist(entry.pw_name, entry.pw_gid)}
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, frozenset(groups), switch=True)

    def wrap(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        """``argv`` run as this account."""
        if not self.switch:
            return argv
        return ("setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv)

    def make_own_directory(self, path: str) -> None:
        """Create ``path`` (0700) owned by this account."""
        os.mkdir(path, 0o700)
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def can_enter(self, st: os.stat_result) -> bool:
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)

    def unreachable_ancestor(self, path: str) -> str | None:
        """The first directory on the way to ``path`` this account may not enter, or None."""
        current = "/"
        for part in os.path.abspath(path).strip("/").split("/"):
            current = os.path.join(current, part)
            if not self.can_enter(os.stat(current)):
                return current
        return None

    def check_reachable(self, path: str) -> None:
        """Raise :class:`ScratchUnusable` when this account cannot reach ``path``."""
        blocked = self.unreachable_ancestor(path)
        if blocked is not None:
            raise ScratchUnusable(
                f"user {self.name!r} cannot enter {blocked}, so a throwaway instance under {path} cannot run; "
                "set scratch.directory to a directory every user may traverse (e.g. /srv/drill-scratch, mode 0755)"
            )


MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; PostgreSQL appends "/.s.PGSQL.NNNNN"


def check_socket_path(path: str) -> None:
    """Raise :class:`ScratchUnusable` when a unix socket at ``path`` would not fit."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ScratchUnusable(
            f"the scratch path {os.path.dirname(path)} is too long for a unix socket "
            f"({len(path)} > {MAX_SOCKET_PATH} characters); set a shorter scratch.directory"
        )
