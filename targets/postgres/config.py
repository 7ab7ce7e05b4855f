"""Configuration of a ``postgres`` target: its schema fragment and its typed form."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "PostgreSQL databases, dumped with pg_dump (custom format) and checksummed table by table.",
    "required": ["kind", "databases"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "postgres", "description": "What kind of data this target is.", "examples": ["postgres"]},
        "host": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "default": "127.0.0.1",
            "description": "Server address, or the directory of its unix socket.",
            "examples": ["127.0.0.1"],
        },
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432,
                 "description": "Server port.", "examples": [5432]},
        "user": {"type": "string", "minLength": 1, "maxLength": 255,
                 "description": "Backup role (needs pg_read_all_data).",
                 "examples": ["backup"]},
        "password_file": {
            "type": "string",
            "pattern": "^/",
            "maxLength": 4096,
            "description": "File holding the role's password (mode 0600); omit for peer/trust authentication.",
            "examples": ["/etc/drill-agent/pg.pw"],
        },
        "databases": {
            "description": "Databases to back up, or 'all' for every database that accepts connections.",
            "oneOf": [
                {"const": "all"},
                {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": True,
                 "items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^,=]+$"}},
            ],
            "examples": [["app", "billing"]],
        },
        "globals": {
            "type": "boolean",
            "default": True,
            "description": (
                "Also capture roles and tablespaces (pg_dumpall --globals-only --no-role-passwords) once per run; "
                "turn off if the role may not read them."
            ),
            "examples": [True],
        },
        "pg_dump": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            "default": "pg_dump",
            "description": "pg_dump to run; its major version must be at least the server's.",
            "examples": ["/usr/lib/postgresql/15/bin/pg_dump"],
        },
    },
}


@dataclass(frozen=True)
class PostgresTargetConfig:
    name: str
    host: str
    port: int
    user: str | None
    password_file: str | None
    databases: tuple[str, ...] | None  # None: all
    pg_dump: str
    globals: bool = True
    kind: str = "postgres"

    @property
    def pg_dumpall(self) -> str:
        """pg_dumpall from the same place as the configured pg_dump."""
        folder = os.path.dirname(self.pg_dump)
        return os.path.join(folder, "pg_dumpall") if folder else "pg_dumpall"


def make_postgres_target(name: str, raw: Mapping[str, Any]) -> PostgresTargetConfig:
    """Build the typed target from a mapping already validated against :data:`SCHEMA`."""
    databases = raw["databases"]
    return PostgresTargetConfig(
        name=name,
        host=raw.get("host", "127.0.0.1"),
        port=int(raw.get("port", 5432)),
        user=raw.get("user"),
        password_file=raw.get("password_file"),
        databases=None if databases == "all" else tuple(databases),
        pg_dump=raw.get("pg_dump", "pg_dump"),
        globals=bool(raw.get("globals", True)),
    )
