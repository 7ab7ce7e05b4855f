"""The coordinator's side of the embedded mode: its key, its ledger, and taking records from local agents.

``drillctl`` runs where it can read the agents' state directories (the embedded
default, or a host that collects them). Each agent's public key is enrolled from
its ``state_dir/keys/signing.pub`` the first time its records are taken; for
agents elsewhere, ``drillctl keys add`` enrols a key handed over out of band.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from agents import signing
from agents.config.model import AgentConfig
from agents.records import Outbox
from drill.config import DrillConfig
from drill.ledger.ledger import AlreadyPresent, Entry, Ledger, Refused
from drill.ledger.store import open_store


@contextlib.contextmanager
def open_ledger(config: DrillConfig) -> Iterator[Ledger]:
    """The ledger of ``config`` with the coordinator's key (created on first use, 0600)."""
    key, _ = signing.ensure_key(os.path.join(config.state_dir, "keys"), config.digest)
    store = open_store(config.ledger_url)
    try:
        yield Ledger(store, key, config.coordinator)
    finally:
        store.close()


def enrol_agent(ledger: Ledger, agent: AgentConfig) -> str | None:
    """Enrol the public key of a local agent; its id, or None when the agent has no key yet."""
    _, public_path = signing.key_paths(os.path.join(agent.state_dir, "keys"))
    try:
        with open(public_path, encoding="utf-8") as handle:
            return ledger.add_key(handle.read(), agent.host, "agent")
    except FileNotFoundError:
        return None


@dataclass
class IngestResult:
    taken: list[Entry] = field(default_factory=list)
    already: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (file, code, reason)


def ingest_files(ledger: Ledger, agent: AgentConfig, paths: list[str], result: IngestResult) -> None:
    """Append the envelopes at ``paths`` (from ``agent``'s outbox); move each one taken to ``sent/``.

    A file is moved only after its entry is committed; if ingest stops in
    between, the next run finds the same envelope already present and just moves
    it -- nothing is taken twice, nothing is lost. A refused file is moved to
    ``outbox/refused/`` beside a ``.reason`` file.
    """
    outbox = Outbox.of(agent)
    enrol_agent(ledger, agent)
    for path in paths:
        try:
            envelope = Outbox.read_envelope(path)
            result.taken.append(ledger.append(envelope))
        except AlreadyPresent:
            result.already += 1
        except Refused as refusal:
            result.refused.append((path, refusal.code, str(refusal)))
            _set_aside(path, f"{refusal.code}: {refusal}")
            continue
        except ValueError as error:  # not JSON
            result.refused.append((path, "malformed", str(error)))
            _set_aside(path, f"malformed: {error}")
            continue
        outbox.mark_sent(path)


def _set_aside(path: str, reason: str) -> None:
    folder = os.path.join(os.path.dirname(path), "refused")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    target = os.path.join(folder, os.path.basename(path))
    os.replace(path, target)
    with open(target + ".reason", "w", encoding="utf-8") as handle:
        handle.write(reason + "\n")


def ingest(ledger: Ledger, config: DrillConfig) -> IngestResult:
    """Take every waiting record from the outboxes of the agents in ``config``."""
    result = IngestResult()
    seen = set()
    for system in config.systems.values():
        if system.agent.state_dir in seen:
            continue
        seen.add(system.agent.state_dir)
        ingest_files(ledger, system.agent, Outbox(system.agent.state_dir).list(), result)
    return result
