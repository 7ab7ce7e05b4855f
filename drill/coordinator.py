"""The coordinator's side of the embedded mode: its key, its ledger, and taking records from local agents.

``drillctl`` runs where it can reach the agents through their config files (the
embedded default, or a host that collects them). Each agent's public key is
enrolled the first time its records are taken; for agents elsewhere,
``drillctl keys add`` enrols a key handed over out of band.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from agents.api import LocalAgent, WaitingRecord
from agents.contract import signing
from agents.contract.records import SignedRecord
from drill.config import DrillConfig
from drill.ledger.ledger import AlreadyPresent, Entry, Ledger, Refused
from drill.ledger.store import open_store


@contextlib.contextmanager
def open_ledger(config: DrillConfig, *, verify: bool = True) -> Iterator[Ledger]:
    """The ledger of ``config`` with the coordinator's key (created on first use, 0600) and its checkpoint log.

    Raises :class:`drill.ledger.ledger.LedgerTampered` when the stored entries
    disagree with the newest signed checkpoint; ``verify=False`` is for the
    audit only, which names every problem itself.
    """
    key, _ = signing.ensure_key(os.path.join(config.state_dir, "keys"), config.digest)
    store = open_store(config.ledger_url)
    try:
        yield Ledger(store, key, config.coordinator, checkpoint_log=config.checkpoint_log, verify=verify)
    finally:
        store.close()


def enrol_agent(ledger: Ledger, agent: LocalAgent) -> str:
    """Enrol the public key of a local agent (trusted on first use, from its own state directory); its id."""
    return ledger.add_key(agent.public_key_pem(), agent.inventory.host, "agent")


@dataclass
class IngestResult:
    taken: list[Entry] = field(default_factory=list)
    already: list[Entry] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (file, code, reason)

    def entry_of(self, record_id: str) -> Entry | None:
        return next((e for e in (*self.taken, *self.already) if e.record_id == record_id), None)


def ingest_from(ledger: Ledger, agent: LocalAgent, records: Sequence[WaitingRecord], result: IngestResult) -> None:
    """Append the signed records ``records`` of ``agent``; each one taken stops waiting in its outbox.

    A record stops waiting only after its entry is committed; if ingest stops in
    between, the next run finds the same envelope already present and just moves
    it -- nothing is taken twice, nothing is lost. A refused record is set aside
    with its reason.
    """
    enrol_agent(ledger, agent)
    for waiting in records:
        try:
            result.taken.append(ledger.append(waiting.envelope))
        except AlreadyPresent as present:
            entry = ledger.entry_at(present.index)
            if entry is not None:
                result.already.append(entry)
        except Refused as refusal:
            result.refused.append((waiting.path, refusal.code, str(refusal)))
            agent.refused(waiting, f"{refusal.code}: {refusal}")
            continue
        agent.delivered(waiting)


def ingest_signed(ledger: Ledger, agent: LocalAgent, records: Sequence[SignedRecord]) -> IngestResult:
    """Take the records a job just ended in (they are in the agent's outbox) into the ledger."""
    result = IngestResult()
    ingest_from(ledger, agent, [WaitingRecord(r.path or "", r.envelope) for r in records], result)
    return result


def ingest(ledger: Ledger, config: DrillConfig) -> IngestResult:
    """Take every waiting record from the outboxes of the agents in ``config``."""
    result = IngestResult()
    seen = set()
    for system in config.systems.values():
        if system.agent.state_dir in seen:
            continue
        seen.add(system.agent.state_dir)
        ingest_from(ledger, system.agent, system.agent.waiting(), result)
    return result
