"""The account a throwaway database instance runs as, and the error for a scratch place that cannot be used.

An agent running as root starts instances as ``run_as`` (a dedicated
unprivileged account; the sandbox drops to it), an agent running as anyone
else starts them as itself.
"""

from __future__ import annotations

import os
import pwd
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
    switch: bool  # True: the agent is root and drops to this account

    @classmethod
    def resolve(cls, run_as: str) -> InstanceAccount:
        """The account to run as: ``run_as`` when the agent is root, else the agent's own.

        Raises :class:`ScratchUnusable` when ``run_as`` does not exist.
        """
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return cls(me.pw_name, me.pw_uid, me.pw_gid, switch=False)
        try:
            entry = pwd.getpwnam(run_as)
        except KeyError:
            raise ScratchUnusable(
                f"user {run_as!r} (scratch run_as) does not exist; create a dedicated account for throwaway "
                f"instances: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {run_as}"
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True)

    def make_own_directory(self, path: str) -> None:
        """Create ``path`` (0700) owned by this account."""
        os.mkdir(path, 0o700)
        if self.switch:
            os.chown(path, self.uid, self.gid)


MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; PostgreSQL appends "/.s.PGSQL.NNNNN"


def check_socket_path(path: str) -> None:
    """Raise :class:`ScratchUnusable` when a unix socket at ``path`` would not fit."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ScratchUnusable(
            f"the scratch path {os.path.dirname(path)} is too long for a unix socket "
            f"({len(path)} > {MAX_SOCKET_PATH} characters); set a shorter scratch.directory"
        )
