"""What database targets have in common: a table's checksum, comparing checksums, the error for an unusable database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TableChecksum:
    """Row count and order-independent checksum of one table; ``columns_digested``: summed with each column reduced
    to a digest first (MySQL/MariaDB, for rows longer than the server's ``max_allowed_packet``)."""

    schema: str
    name: str
    rows: int
    checksum: str
    columns_digested: bool = False


@dataclass(frozen=True)
class TableManifest:
    """What a database held, table by table: its schema digest, every table's checksum, and the tables
    whose engine could not give a consistent view (MySQL's MyISAM and the like), and the checksum method."""

    schema_digest: str
    tables: tuple[TableChecksum, ...]
    non_transactional: tuple[str, ...] = ()
    method: str = field(kw_only=True)  # how the checksums were computed, in words (the manifest's ``checksum``)

    def table_documents(self) -> list[dict[str, object]]:
        """The manifest's ``tables``; ``columns_digested`` only where it is true."""
        return [{"schema": t.schema, "name": t.name, "rows": t.rows, "checksum": t.checksum,
                 **({"columns_digested": True} if t.columns_digested else {})} for t in self.tables]


class DatabaseUnavailable(Exception):
    """The database cannot be reached or refused us; the message says why (never the password)."""


@dataclass(frozen=True)
class TableDifference:
    """How a restored table differs from the manifest: ``code`` is a finding code, ``table`` is schema.name."""

    code: str  # table_missing, table_unexpected, row_count_mismatch, checksum_mismatch
    table: str
    detail: str


def compare_tables(
    expected: Sequence[Mapping[str, object]], restored: Sequence[TableChecksum]
) -> list[TableDifference]:
    """Compare the manifest's tables (``schema``, ``name``, ``rows``, ``checksum``) with the restored ones.

    A table whose row count differs is reported only as ``row_count_mismatch``
    (its checksum differs as a matter of course); equal counts with a different
    checksum mean changed rows.
    """
    wanted = {f"{t['schema']}.{t['name']}": t for t in expected}
    found = {f"{t.schema}.{t.name}": t for t in restored}
    differences = []
    for name in sorted(wanted.keys() | found.keys()):
        want, got = wanted.get(name), found.get(name)
        if got is None:
            differences.append(TableDifference("table_missing", name, "in the manifest, not in the restored database"))
        elif want is None:
            differences.append(TableDifference("table_unexpected", name, "restored, but not in the manifest"))
        elif got.rows != want["rows"]:
            differences.append(TableDifference(
                "row_count_mismatch", name, f"manifest {want['rows']} rows, restored {got.rows}"))
        elif got.checksum != str(want["checksum"]):
            differences.append(TableDifference(
                "checksum_mismatch", name, f"same {got.rows} rows, but their content differs "
                f"(checksum manifest {want['checksum']}, restored {got.checksum})"))
    return differences
