"""Exact, order-independent table checksums in MySQL/MariaDB, as SQL built by pure functions.

Per table: the row count and the sum, modulo 2**64, of a 64-bit value of each
row's canonical text (summing, unlike XOR, keeps two identical rows from
cancelling out). The canonical text joins every column with a separator, binary
types as hex, plus a flag per column that tells NULL from an empty string;
``time_zone`` is fixed to UTC. Two methods, named in the manifest by their
description (a verification recomputes with the manifest's):

- :data:`CRC_PAIR` (written since MariaDB 10.8 has ``CRC32C``): the row's
  ``CRC32`` and ``CRC32C`` side by side. The two CRCs' polynomials are different
  and coprime, so the pair is the row's remainder modulo their degree-64 product
  (Chinese remainder theorem): a 64-bit CRC, which misses a random change of a
  row with probability 2^-64 and no change of up to 64 consecutive bits. Being
  linear, the same change to exactly two rows of equal length, at the same
  place, can cancel in the sum (about 2^-32 for a typical change); a non-linear
  term (a materialised product) measured 40 % slower. Numbers and
  times enter as they are (their text is ASCII in every character set); other
  text is converted to utf8mb4 so a column's own character set and collation
  cannot change it.
- :data:`MD5_PREFIX` (before; still written where ``CRC32C`` is missing, as on
  MySQL 8): the first 64 bits of the row's MD5, every non-binary column converted
  to utf8mb4. About half as fast.

A row whose text would be longer than the server's ``max_allowed_packet``
makes ``CONCAT_WS`` NULL (warning 1301) and would be counted without being
hashed. A table where that happens is summed again with each column reduced to
its own digest first (:func:`make_table_checksum_sql` ``columns_digested``; a
CRC pair, or an MD5, of the column's text, binary as it is), so the row's text
is a few dozen bytes a column; the manifest names such tables.

A large table with a one-column integer primary key is summed in key ranges,
one per connection, all in the same snapshot; the parts' counts and sums add up
to the table's (:func:`make_key_ranges`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

MODULUS = 2**64
# max_error_count: every warning of a statement stays visible to SHOW WARNINGS (the server keeps 64 by default), so
# that one saying a row was too long to hash is never crowded out.
SESSION_SETTINGS = ("SET SESSION time_zone = '+00:00'", "SET SESSION group_concat_max_len = 1048576",
                    "SET SESSION max_error_count = 65535")
TRANSACTIONAL_ENGINES = frozenset({"innodb", "xtradb", "ndbcluster", "rocksdb", "tokudb"})
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit", "geometry",
                          "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                          "geometrycollection"})
# Types whose text is digits, signs, dots, colons and dashes in any character set: given to CONCAT_WS as they are.
PLAIN_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric",
                         "float", "double", "real", "date", "datetime", "timestamp", "time", "year"})
INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})

_HELD = "in a transaction started with the dump's while writes were held"
CRC_PAIR = ("sum(CRC32(row) * 2^32 + CRC32C(row)) mod 2^64, row = CONCAT_WS(0x1f, numbers and times as text, "
            f"other text as utf8mb4, binary as hex, NULL flags), {_HELD}")
MD5_PREFIX = f"sum(first 64 bits of MD5(CONCAT_WS(0x1f, columns as utf8mb4 or hex, NULL flags))) mod 2^64, {_HELD}"
ROW_METHODS = (CRC_PAIR, MD5_PREFIX)  # how a row is hashed; the first is preferred
# Added to the method's name in a manifest in which some table was summed with its columns digested: an agent that
# does not know that way of summing does not know the name either, and says it could not verify (not a mismatch).
WITH_COLUMNS_DIGESTED = "; a table marked columns_digested: each column digested first"
METHODS = (*ROW_METHODS, *(m + WITH_COLUMNS_DIGESTED for m in ROW_METHODS))  # what a verification can recompute
PROBE_CRC32C_SQL = "SELECT CRC32C('')"
# "Result of concat_ws() was larger than max_allowed_packet - truncated": the value became NULL.
LONGER_THAN_PACKET = 1301

# Below this many rows (the server's estimate) a table is summed on one connection: splitting costs two queries.
SPLIT_FROM_ROWS = 100_000

LIST_TABLES_SQL = (
    "SELECT TABLE_NAME, COALESCE(ENGINE, ''), COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
)
LIST_COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, COALESCE(CHARACTER_SET_NAME, ''), COALESCE(COLLATION_NAME, ''), "
    "COLUMN_KEY = 'PRI' FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
)


@dataclass(frozen=True)
class Column:
    """One column as ``LIST_COLUMNS_SQL`` describes it."""

    name: str
    data_type: str
    charset: str = ""  # '' for types without one
    collation: str = ""
    primary: bool = False  # part of the primary key

    @property
    def is_text(self) -> bool:
        kind = self.data_type.lower()
        return kind not in BINARY_TYPES and kind not in PLAIN_TYPES


def split_method(method: str) -> tuple[str, bool]:
    """A manifest's method as (how a row is hashed, whether tables may be summed with their columns digested).

    Raises ``ValueError`` for a method not in :data:`METHODS`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown checksum method {method[:80]!r}")
    if method.endswith(WITH_COLUMNS_DIGESTED):
        return method[: -len(WITH_COLUMNS_DIGESTED)], True
    return method, False


def quote_ident(name: str) -> str:
    """Quote a MySQL identifier (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def _text_as_is(columns: Sequence[Column]) -> bool:
    """Whether the text columns can enter CONCAT_WS unconverted: all utf8mb4 in one collation (converting
    would not change a byte, and one collation cannot clash with another)."""
    texts = [c for c in columns if c.is_text]
    return all(c.charset == "utf8mb4" for c in texts) and len({c.collation for c in texts}) <= 1


def _column_text(column: Column, method: str, text_as_is: bool, digested: bool) -> str:
    quoted = quote_ident(column.name)
    kind = column.data_type.lower()
    if kind in BINARY_TYPES:
        return _column_digest(quoted, method) if digested else f"HEX({quoted})"
    as_is = method == CRC_PAIR and (kind in PLAIN_TYPES or text_as_is)
    text = quoted if as_is else f"CONVERT({quoted} USING utf8mb4)"
    return _column_digest(text, method) if digested else text


def _column_digest(text: str, method: str) -> str:
    """A column's text reduced to a short digest of it, by the method's own hash (NULL stays NULL)."""
    if method == CRC_PAIR:
        return f"CONCAT(CRC32({text}), ':', CRC32C({text}))"
    return f"MD5({text})"


def _row_value(row: str, method: str) -> str:
    if method == CRC_PAIR:
        return f"((CRC32({row}) << 32) | CRC32C({row}))"
    if method == MD5_PREFIX:
        return f"CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)"
    raise ValueError(f"unknown checksum method {method[:80]!r}")


def make_table_checksum_sql(
    database: str, table: str, columns: Sequence[Column], method: str = CRC_PAIR, where: str = "", *,
    columns_digested: bool = False,
) -> str:
    """SQL returning (row count, checksum as text) of one table, or of the rows ``where`` selects.

    Given the table's columns in ordinal order and one of :data:`ROW_METHODS`; ``where`` is a predicate from
    :func:`make_key_ranges` or ''; ``columns_digested``: each column enters the row's text as a digest of its own
    text (for rows longer than ``max_allowed_packet``). Raises ``ValueError`` for an unknown method.
    """
    if method not in ROW_METHODS:
        raise ValueError(f"unknown checksum method {method[:80]!r}")
    as_is = _text_as_is(columns)
    texts = ", ".join(_column_text(column, method, as_is, columns_digested) for column in columns)
    nulls = ", ".join(f"ISNULL({quote_ident(column.name)})" for column in columns)
    row = f"CONCAT_WS(0x1f, {texts}, CONCAT({nulls}))" if columns else "''"
    relation = f"{quote_ident(database)}.{quote_ident(table)}"
    condition = f" WHERE {where}" if where else ""
    # Identifiers are quoted by quote_ident, the predicate holds only integers, and no value is interpolated.
    return (f"SELECT COUNT(*), CAST(COALESCE(MOD(SUM({_row_value(row, method)}), {MODULUS}), 0) AS CHAR) "  # noqa: S608
            f"FROM {relation}{condition}")


def split_key(columns: Sequence[Column]) -> str | None:
    """The table's primary key column when it is one integer column (the table can be summed in ranges), else
    None."""
    key = [column for column in columns if column.primary]
    if len(key) == 1 and key[0].data_type.lower() in INTEGER_TYPES:
        return key[0].name
    return None


def make_key_bounds_sql(database: str, table: str, key: str) -> str:
    """SQL returning the smallest and largest value of the table's integer ``key`` (NULLs when it is empty)."""
    relation = f"{quote_ident(database)}.{quote_ident(table)}"
    return f"SELECT MIN({quote_ident(key)}), MAX({quote_ident(key)}) FROM {relation}"  # noqa: S608 (quoted names)


def make_key_ranges(key: str, low: int | None, high: int | None, parts: int) -> list[str]:
    """Predicates that split the rows between ``low`` and ``high`` (the key's MIN and MAX) into ``parts`` ranges.

    The first and last ranges are open-ended, so together they cover every row whatever the bounds were; an
    empty table (no bounds) or ``parts`` < 2 gives one range that is the whole table ('').
    """
    if low is None or high is None or parts < 2 or high - low < parts:
        return [""]
    column = quote_ident(key)
    cuts = [low + (high - low) * i // parts for i in range(1, parts)]
    ranges = [f"{column} <= {cuts[0]}"]
    ranges += [f"{column} > {a} AND {column} <= {b}" for a, b in itertools.pairwise(cuts)]
    ranges.append(f"{column} > {cuts[-1]}")
    return ranges


def is_transactional(engine: str) -> bool:
    return engine.lower() in TRANSACTIONAL_ENGINES
