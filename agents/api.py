"""The agent's door for the coordinator in the embedded mode: an agent reached through its config file.

Beside :mod:`agents.contract`, this is all of the agent the coordinator may
import (``tests/unit/test_layers.py``). What crosses is what would cross the
network in the fleet: an :class:`~agents.contract.inventory.Inventory`, a
``drill.job/v1`` in, signed records out, and the records waiting in the outbox.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from agents import process
from agents.config.model import AgentConfig, load_config
from agents.contract import signing
from agents.contract.documents import DocumentError
from agents.contract.inventory import Inventory, PolicyInfo, RepositoryInfo, TargetInfo
from agents.contract.jobs import Job
from agents.contract.records import SignedRecord
from agents.execute import execute
from agents.keys import KeyStore
from agents.outbox import Outbox
from agents.repositories import init_repository, open_keys, open_outbox
from agents.restic.messages import BackupStatus

Progress = Callable[[str, BackupStatus], None]


def install_signal_handlers() -> None:
    """Turn SIGINT/SIGTERM into a cancellation: running jobs stop cleanly and write a failed record."""
    process.install_signal_handlers()


def cancelled() -> bool:
    """Whether SIGINT/SIGTERM asked this process to stop."""
    return process.CANCELLATION.is_cancelled


@dataclass(frozen=True)
class WaitingRecord:
    """A signed record in an agent's outbox, not yet taken by the coordinator."""

    path: str
    envelope: object


class LocalAgent:
    """An agent on this machine, reached through its config file."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config

    @classmethod
    def open(cls, config_path: str) -> LocalAgent:
        """The agent whose config is at ``config_path``. Raises ``ConfigError`` with every problem found."""
        return cls(load_config(config_path))

    @property
    def config_path(self) -> str:
        return self._config.source

    @property
    def state_dir(self) -> str:
        return self._config.state_dir

    @property
    def inventory(self) -> Inventory:
        config = self._config
        return Inventory(
            host=config.host,
            targets={name: TargetInfo(kind=target.kind) for name, target in config.targets.items()},
            repositories={name: RepositoryInfo(site=config.sites[name]) for name in config.repositories},
            policies={name: PolicyInfo(targets=list(p.targets), repository=p.repository,
                                       replicate_to=list(p.replicate_to)) for name, p in config.policies.items()},
        )

    def execute(self, job: Job, progress: Progress | None = None) -> list[SignedRecord]:
        """Run ``job`` here; its signed records (see :func:`agents.execute.execute`)."""
        return execute(self._config, job, progress=progress)

    def init_repositories(self) -> dict[str, bool]:
        """Create every repository of the config; whether each was new. Raises ``ResticError``."""
        return {name: init_repository(self._config, name)[0] for name in self._config.repositories}

    def public_key_pem(self) -> str:
        """The agent's public key (its key pair is created on first use)."""
        return open_keys(self._config).public_pem()

    def _outbox(self) -> Outbox:
        return open_outbox(self._config)

    def waiting(self, limit: int | None = None) -> list[WaitingRecord]:
        """The records waiting for the coordinator, oldest first (unreadable files too: the ledger refuses them);
        the oldest ``limit`` only, when given -- the rest are not read."""
        return [WaitingRecord(path, envelope) for path, envelope in
                itertools.islice(self._outbox().read_waiting(), limit)]

    def delivered(self, record: WaitingRecord) -> None:
        """The coordinator has the record in its ledger: it waits no more."""
        self._outbox().mark_sent(record.path)

    def refused(self, record: WaitingRecord, reason: str) -> None:
        """The coordinator refused the record: set it aside with the reason."""
        self._outbox().set_aside(record.path, reason)


def waiting_records(state_dir: str) -> tuple[list[SignedRecord], list[tuple[str, str]]]:
    """The records waiting in the outbox of the agent whose state is ``state_dir``, unverified (for display), and
    the files among them that cannot be read as records: (path, why) each -- the coordinator will refuse them."""
    outbox = Outbox(state_dir, KeyStore(state_dir))  # the key is only read when something is signed
    records: list[SignedRecord] = []
    unreadable: list[tuple[str, str]] = []
    for path, envelope in outbox.read_waiting():
        if isinstance(envelope, dict) and set(envelope) == {"unreadable"}:  # not JSON, or not readable at all
            unreadable.append((path, str(envelope["unreadable"])))
            continue
        try:
            records.append(SignedRecord.read_unverified(envelope, path))
        except (DocumentError, signing.SignatureError) as error:
            unreadable.append((path, str(error)))
    return records, unreadable
