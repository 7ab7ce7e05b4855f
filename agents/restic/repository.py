"""Where one restic repository is and how to open it: the value every restic command is run against."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Repository:
    """How to reach one restic repository.

    ``env`` holds the backend's credentials (AWS_ACCESS_KEY_ID, …) read from the
    repository's env file; they go only into restic's environment.
    """

    name: str
    url: str
    password_file: str | None = None
    password_command: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # How long opening the repository may take before it counts as unreachable.
    connect_timeout: float = 60.0
    # How long a running command may go without progress before it is stopped.
    stall_timeout: float = 300.0
    # How long a command waits for another restic's lock on the repository before it fails as locked.
    lock_wait: float = 600.0
    # The key restic tries first (``RESTIC_KEY_HINT``): the agent's own, opened by ``password_file``.
    key_hint: str | None = None
    # Opened with the agent's own key: the repository as configured, for when that key no longer opens it (an
    # operator removed it, or a rotation by another job of this agent replaced it, while this job ran).
    configured: Repository | None = field(default=None, repr=False, compare=False)

    @property
    def local_path(self) -> str | None:
        """The folder of a repository on a local file system (a plain absolute path or ``local:PATH``), else
        None."""
        path = self.url.removeprefix("local:")
        return path if os.path.isabs(path) else None

    def restic_environment(self, prefix: str = "RESTIC_") -> dict[str, str]:
        """The variables that point restic at this repository (``RESTIC_FROM_`` for a copy source)."""
        env = {f"{prefix}REPOSITORY": self.url}
        if self.password_file is not None:
            env[f"{prefix}PASSWORD_FILE"] = self.password_file
        if self.password_command is not None:
            env[f"{prefix}PASSWORD_COMMAND"] = self.password_command
        if self.key_hint is not None:
            env[f"{prefix}KEY_HINT"] = self.key_hint
        return env

    def opened_with(self, password_file: str, key_hint: str) -> Repository:
        """The same repository, opened with another key: the one named ``key_hint``, whose password is in
        ``password_file``."""
        return replace(self, password_file=password_file, password_command=None, key_hint=key_hint,
                       configured=self.configured or self)
