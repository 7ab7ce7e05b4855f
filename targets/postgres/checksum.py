"""Exact, order-independent table checksums in PostgreSQL, as SQL built by pure functions.

Per table: the row count and the sum, modulo 2**64, of a 64-bit hash of each
row's canonical text (``hashtextextended(row::text, 0)``, the hash PostgreSQL
keeps stable across versions for hash partitioning). Summing makes the result
independent of row order; unlike XOR, two identical rows do not cancel out.

The row text is canonical once the session fixes the settings that change how
values print (:data:`CANONICAL_SETTINGS`); collations do not change a value's
text. The same SQL runs on the restored database to compare.
"""

from __future__ import annotations

METHOD = "sum(hashtextextended(row::text, 0)) mod 2^64, in the snapshot pg_dump imported"  # in the manifest
METHODS = (METHOD, "sum(hashtextextended(row::text, 0)) mod 2^64")  # the same checksum, as the first manifests said

# Settings under which every type prints the same text on the source and on the
# restored copy (time zone, date and interval styles, float digits, bytea form).
CANONICAL_SETTINGS: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
)

LIST_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY n.nspname, c.relname
"""

# Columns, types, defaults, nullability, constraints and indexes of user tables:
# the schema digest covers what a restore must reproduce.
SCHEMA_SQL = """
SELECT format('%s.%s', n.nspname, c.relname) AS tab, c.relkind::text,
       coalesce((SELECT string_agg(format('%s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod),
                                          a.attnotnull, pg_get_expr(d.adbin, d.adrelid)), ', ' ORDER BY a.attnum)
                 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') AS columns,
       coalesce((SELECT string_agg(pg_get_constraintdef(k.oid, true), ', ' ORDER BY k.conname)
                 FROM pg_constraint k WHERE k.conrelid = c.oid), '') AS constraints,
       coalesce((SELECT string_agg(pg_get_indexdef(i.indexrelid), ', ' ORDER BY pg_get_indexdef(i.indexrelid))
                 FROM pg_index i WHERE i.indrelid = c.oid), '') AS indexes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1
"""


MODULUS = 2**64


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def make_table_checksum_sql(schema: str, table: str) -> str:
    """SQL returning (row count, checksum as text) of one table.

    The checksum is the sum of 64-bit row hashes modulo 2**64, printed in decimal.
    """
    relation = f"{quote_ident(schema)}.{quote_ident(table)}"
    total = f"coalesce(mod(mod(sum(hashtextextended(t::text, 0)), {MODULUS}) + {MODULUS}, {MODULUS}), 0)::text"
    # Identifiers are quoted by quote_ident and no value is interpolated.
    return f"SELECT count(*), {total} FROM ONLY {relation} AS t"  # noqa: S608


def make_settings_sql() -> list[str]:
    """SET LOCAL statements that make row text canonical inside a transaction."""
    return [f"SET LOCAL {name} TO '{value}'" for name, value in CANONICAL_SETTINGS]
