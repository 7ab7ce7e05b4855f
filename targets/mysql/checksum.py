"""Exact, order-independent table checksums in MySQL/MariaDB, as SQL built by pure functions.

Per table: the row count and the sum, modulo 2**64, of the first 64 bits of the
MD5 of each row's canonical text (pt-table-checksum's idea, made order
independent by summing instead of chaining). The canonical text joins every
column with a separator: binary types as hex, the rest converted to utf8mb4
(so collations and connection charsets cannot change it), plus a flag per
column that tells NULL from an empty string. ``time_zone`` is fixed to UTC.
"""

from __future__ import annotations

MODULUS = 2**64
SESSION_SETTINGS = ("SET SESSION time_zone = '+00:00'", "SET SESSION group_concat_max_len = 1048576")
TRANSACTIONAL_ENGINES = frozenset({"innodb", "xtradb", "ndbcluster", "rocksdb", "tokudb"})
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit", "geometry",
                          "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                          "geometrycollection"})

LIST_TABLES_SQL = (
    "SELECT TABLE_NAME, COALESCE(ENGINE, '') FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
)
LIST_COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
)


def quote_ident(name: str) -> str:
    """Quote a MySQL identifier (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def _column_text(name: str, data_type: str) -> str:
    column = quote_ident(name)
    if data_type.lower() in BINARY_TYPES:
        return f"HEX({column})"
    return f"CONVERT({column} USING utf8mb4)"


def make_table_checksum_sql(database: str, table: str, columns: list[tuple[str, str]]) -> str:
    """SQL returning (row count, checksum as text) of one table, given its (column, data type) list."""
    texts = ", ".join(_column_text(name, kind) for name, kind in columns)
    nulls = ", ".join(f"ISNULL({quote_ident(name)})" for name, _ in columns)
    row = f"CONCAT_WS(0x1f, {texts}, CONCAT({nulls}))" if columns else "''"
    hashed = f"CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)"
    relation = f"{quote_ident(database)}.{quote_ident(table)}"
    # Identifiers are quoted by quote_ident and no value is interpolated.
    return f"SELECT COUNT(*), CAST(COALESCE(MOD(SUM({hashed}), {MODULUS}), 0) AS CHAR) FROM {relation}"  # noqa: S608


def is_transactional(engine: str) -> bool:
    return engine.lower() in TRANSACTIONAL_ENGINES
