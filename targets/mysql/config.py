"""Configuration of a ``mysql`` target: its schema fragment and its typed form."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "MySQL or MariaDB databases, dumped with --single-transaction and checksummed table by table.",
    "required": ["kind", "databases"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "mysql", "description": "What kind of data this target is.", "examples": ["mysql"]},
        "host": {"type": "string", "minLength": 1, "maxLength": 1024, "default": "127.0.0.1",
                 "description": "Server address.",
                 "examples": ["127.0.0.1"]},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 3306, "description": "Server port.",
                 "examples": [3306]},
        "user": {"type": "string", "minLength": 1, "maxLength": 255,
                 "description": "Backup user (see the README for its grants).",
                 "examples": ["backup"]},
        "password_file": {"type": "string", "pattern": "^/", "maxLength": 4096,
                          "description": "File holding the user's password.",
                          "examples": ["/etc/drill-agent/mysql.pw"]},
        "databases": {
            "description": "Databases to back up, or 'all' for every database but the server's own.",
            "oneOf": [
                {"const": "all"},
                {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": True,
                 "items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^,=`]+$"}},
            ],
            "examples": [["crm"]],
        },
        "dump": {"type": "string", "minLength": 1, "maxLength": 4096,
                 "description": "Dump tool; default mariadb-dump if installed, else mysqldump.",
                 "examples": ["/usr/bin/mysqldump"]},
    },
}


@dataclass(frozen=True)
class MysqlTargetConfig:
    name: str
    host: str
    port: int
    user: str
    password_file: str | None
    databases: tuple[str, ...] | None  # None: all
    dump: str
    kind: str = "mysql"


def make_mysql_target(name: str, raw: Mapping[str, Any]) -> MysqlTargetConfig:
    """Build the typed target from a mapping already validated against :data:`SCHEMA`."""
    databases = raw["databases"]
    default_dump = "mariadb-dump" if shutil.which("mariadb-dump") else "mysqldump"
    return MysqlTargetConfig(
        name=name,
        host=raw.get("host", "127.0.0.1"),
        port=int(raw.get("port", 3306)),
        user=raw.get("user", "root"),
        password_file=raw.get("password_file"),
        databases=None if databases == "all" else tuple(databases),
        dump=raw.get("dump", default_dump),
    )
