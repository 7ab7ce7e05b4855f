"""The ``scratch:`` section of the agent's config: where verifications restore to.

A scratch host needs no credentials of the production databases: a dump is
restored into a **throwaway instance** the agent starts itself (initdb/pg_ctl,
mariadb-install-db/mariadbd; unix socket only, no TCP port) or, if one is
configured, into a new database on a **scratch server**.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SERVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "A scratch server to restore into instead of a throwaway instance: a new database is created for each "
        "verification and dropped afterwards. The user needs the right to create databases."
    ),
    "required": ["host"],
    "additionalProperties": False,
    "properties": {
        "host": {"type": "string", "minLength": 1, "maxLength": 1024,
                 "description": "Server address or socket directory.",
                 "examples": ["127.0.0.1"]},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Server port.",
                 "examples": [5432]},
        "user": {"type": "string", "minLength": 1, "maxLength": 255,
                 "description": "User that may create and drop databases.",
                 "examples": ["drill_scratch"]},
        "password_file": {"type": "string", "pattern": "^/", "maxLength": 4096,
                          "description": "File holding the user's password.",
                          "examples": ["/etc/drill-agent/scratch-db.pw"]},
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Where verifications restore to. Everything is created fresh and removed afterwards.",
    "additionalProperties": False,
    "properties": {
        "directory": {
            "type": "string",
            "pattern": "^/",
            "maxLength": 4096,
            "description": (
                "Parent of the scratch directories (default: state_dir/scratch). Throwaway database instances live "
                "here too (each in its own sandbox), so its path must be short "
                "enough for a unix socket (about 80 characters)."
            ),
            "examples": ["/srv/drill-scratch"],
        },
        "load_timeout": {
            "type": "integer",
            "minimum": 1,
            "maximum": 7 * 24 * 3600,
            "description": (
                "Longest a dump may take to load into the scratch database, in seconds (default 21600, six hours). "
                "A dump is the tenant's: one can stall its loader on purpose (a statement that sleeps), and a "
                "drill waits for every verification. Past this the load is stopped and the verification could "
                "not run."
            ),
            "examples": [21600],
        },
        "checksum_timeout": {
            "type": "integer",
            "minimum": 1,
            "maximum": 7 * 24 * 3600,
            "description": (
                "Longest the restored database's checksums may take, in seconds (default 21600, six hours). A "
                "tenant's tables can be made slow to read on purpose (a MariaDB virtual column that builds "
                "megabytes a row). Past this the server is told to stop and the verification could not run."
            ),
            "examples": [21600],
        },
        "postgres": {
            "type": "object",
            "description": "How PostgreSQL dumps are restored.",
            "additionalProperties": False,
            "properties": {
                "bin_dir": {"type": "string", "pattern": "^/", "maxLength": 4096,
                            "description": "Directory of initdb, pg_ctl and pg_restore; default: the newest "
                            "/usr/lib/postgresql/N/bin, else the directory of initdb on PATH.",
                            "examples": ["/usr/lib/postgresql/15/bin"]},
                "run_as": {"type": "string", "minLength": 1, "maxLength": 255, "default": "drill-sandbox",
                           "description": "Dedicated unprivileged account the throwaway instance and the loader run "
                           "as, in the sandbox, when the agent runs as root; never root or a database server's own "
                           "account.", "examples": ["drill-sandbox"]},
                "server": _SERVER_SCHEMA,
            },
        },
        "mysql": {
            "type": "object",
            "description": "How MySQL/MariaDB dumps are restored.",
            "additionalProperties": False,
            "properties": {
                "install_db": {"type": "string", "minLength": 1, "maxLength": 4096,
                               "description": "Initialises a data directory; default mariadb-install-db.",
                               "examples": ["/usr/bin/mariadb-install-db"]},
                "daemon": {"type": "string", "minLength": 1, "maxLength": 4096,
                           "description": "Server binary; default mariadbd.",
                           "examples": ["/usr/sbin/mariadbd"]},
                "client": {"type": "string", "minLength": 1, "maxLength": 4096,
                           "description": "Client that loads the dump; default mariadb, else mysql.",
                           "examples": ["/usr/bin/mariadb"]},
                "run_as": {"type": "string", "minLength": 1, "maxLength": 255, "default": "drill-sandbox",
                           "description": "Dedicated unprivileged account the throwaway instance and the client run "
                           "as, in the sandbox, when the agent runs as root; never root or a database server's own "
                           "account.", "examples": ["drill-sandbox"]},
                "server": _SERVER_SCHEMA,
            },
        },
    },
    "examples": [{"directory": "/srv/drill-scratch", "postgres": {"run_as": "drill-sandbox"},
                  "mysql": {"run_as": "drill-sandbox"}}],
}


@dataclass(frozen=True)
class ScratchServer:
    host: str
    port: int | None
    user: str | None
    password_file: str | None


@dataclass(frozen=True)
class PostgresScratch:
    bin_dir: str
    run_as: str = "drill-sandbox"
    server: ScratchServer | None = None

    def tool(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name


@dataclass(frozen=True)
class MysqlScratch:
    install_db: str = "mariadb-install-db"
    daemon: str = "mariadbd"
    client: str = "mariadb"
    run_as: str = "drill-sandbox"
    server: ScratchServer | None = None


DEFAULT_LOAD_TIMEOUT = 6 * 3600
DEFAULT_CHECKSUM_TIMEOUT = 6 * 3600


@dataclass(frozen=True)
class ScratchConfig:
    directory: str | None = None  # None: state_dir/scratch
    load_timeout: float = DEFAULT_LOAD_TIMEOUT  # seconds a dump's loader may run
    checksum_timeout: float = DEFAULT_CHECKSUM_TIMEOUT  # seconds the restored database's checksums may take
    postgres: PostgresScratch = field(default_factory=lambda: PostgresScratch(default_postgres_bin_dir()))
    mysql: MysqlScratch = field(default_factory=MysqlScratch)


def default_postgres_bin_dir() -> str:
    """The newest Debian-style ``/usr/lib/postgresql/N/bin``, else initdb's directory on PATH, else ''."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.isfile(os.path.join(d, "initdb"))]

    def major(path: str) -> int:
        part = path.split("/")[-2]
        return int(part) if part.isdigit() else 0

    if found:
        return max(found, key=major)
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else ""


def _server(raw: Mapping[str, Any] | None) -> ScratchServer | None:
    if raw is None:
        return None
    return ScratchServer(raw["host"], raw.get("port"), raw.get("user"), raw.get("password_file"))


def make_scratch_config(raw: Mapping[str, Any] | None) -> ScratchConfig:
    """Typed scratch settings from a mapping already validated against :data:`SCHEMA` (None: defaults)."""
    raw = raw or {}
    pg = raw.get("postgres") or {}
    my = raw.get("mysql") or {}
    client = my.get("client") or ("mariadb" if shutil.which("mariadb") or not shutil.which("mysql") else "mysql")
    return ScratchConfig(
        directory=raw.get("directory"),
        load_timeout=float(raw.get("load_timeout", DEFAULT_LOAD_TIMEOUT)),
        checksum_timeout=float(raw.get("checksum_timeout", DEFAULT_CHECKSUM_TIMEOUT)),
        postgres=PostgresScratch(pg.get("bin_dir") or default_postgres_bin_dir(), pg.get("run_as", "drill-sandbox"),
                                 _server(pg.get("server"))),
        mysql=MysqlScratch(my.get("install_db", "mariadb-install-db"), my.get("daemon", "mariadbd"), client,
                           my.get("run_as", "drill-sandbox"), _server(my.get("server"))),
    )
