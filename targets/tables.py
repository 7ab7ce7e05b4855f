"""What database targets have in common: a table's checksum and the error for an unusable database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableChecksum:
    """Row count and order-independent checksum of one table."""

    schema: str
    name: str
    rows: int
    checksum: str


class DatabaseUnavailable(Exception):
    """The database cannot be reached or refused us; the message says why (never the password)."""
