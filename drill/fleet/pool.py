"""A small pool of database connections for the service, each with its ledger opened once."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from dataclasses import dataclass

from agents.contract.signing import SigningKey
from drill.fleet.tables import create_fleet_tables
from drill.ledger.ledger import Ledger
from drill.ledger.store import Store, open_store


@dataclass
class Connection:
    store: Store
    ledger: Ledger


class Pool:
    """``size`` connections to the ledger's database. The ledger is checked against its newest signed checkpoint
    when the first one opens (raising ``LedgerTampered``), not on every request."""

    def __init__(self, url: str, size: int, key: SigningKey, coordinator: str, checkpoint_log: str | None) -> None:
        self._free: queue.Queue[Connection] = queue.Queue()
        self._all: list[Connection] = []
        for index in range(size):
            store = open_store(url)
            if index == 0:
                create_fleet_tables(store)
            connection = Connection(store, Ledger(store, key, coordinator, checkpoint_log=checkpoint_log,
                                                  verify=index == 0))
            self._all.append(connection)
            self._free.put(connection)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Connection]:
        connection = self._free.get()
        try:
            yield connection
        finally:
            self._free.put(connection)

    def close(self) -> None:
        for connection in self._all:
            connection.store.close()
