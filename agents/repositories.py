"""Opening what an agent config names: a repository (restic bound to the agent's binary, cache and state),
its outbox and its record store."""

from __future__ import annotations

from agents.config.model import AgentConfig
from agents.keys import KeyStore
from agents.outbox import Outbox, RecordStore
from agents.restic.agentkey import with_agent_key
from agents.restic.runner import Restic
from agents.state import StateDir


def open_repository(config: AgentConfig, name: str) -> Restic:
    """restic for repository ``name`` of ``config``, with the agent's cache and stale-lock markers, opened with
    the agent's own key where it can have one (:mod:`agents.restic.agentkey`).

    Raises ``KeyError`` for an unknown name and ``UnsupportedResticVersion`` for a
    missing or too old restic.
    """
    state = StateDir(config.state_dir)
    repository = config.repositories[name]
    if config.agent_keys:
        repository = with_agent_key(repository, state, config.host)
    return Restic(config.restic_binary, repository, state.restic_cache, state.lock_markers,
                  state.sub("tmp"), rclone_binary=config.rclone_binary)


def init_repository(config: AgentConfig, name: str) -> tuple[bool, str | None]:
    """Create repository ``name`` of ``config`` unless it exists, and make the agent's own key to it now rather
    than at the first job. Returns whether it was created and the agent key's id (None: opened with the
    configured password). Raises ``ResticError``."""
    created = open_repository(config, name).init()
    return created, open_repository(config, name).repository.key_hint


def open_keys(config: AgentConfig) -> KeyStore:
    return KeyStore(config.state_dir, config.evidence_digest)


def open_outbox(config: AgentConfig) -> Outbox:
    """The agent's outbox, signing with its key under its configured digest."""
    return Outbox(config.state_dir, open_keys(config))


def open_record_store(config: AgentConfig) -> RecordStore:
    return RecordStore(open_outbox(config))
