"""Opening a configured repository: restic bound to the agent's binary, cache and state."""

from __future__ import annotations

from agents.config.model import AgentConfig
from agents.restic.runner import Restic
from agents.state import StateDir


def open_repository(config: AgentConfig, name: str) -> Restic:
    """restic for repository ``name`` of ``config``, with the agent's cache and stale-lock markers.

    Raises ``KeyError`` for an unknown name and ``UnsupportedResticVersion`` for a
    missing or too old restic.
    """
    state = StateDir(config.state_dir)
    return Restic(config.restic_binary, config.repositories[name], state.restic_cache, state.lock_markers)
