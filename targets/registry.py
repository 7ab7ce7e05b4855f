"""The explicit registry of target kinds: a kind is listed here or it does not exist.

Each kind contributes a schema fragment for the agent's config and a function
that builds its typed configuration. A database kind also has an engine in
``agents/engines/`` (the agent checks at import that every database kind has one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from targets.files import config as files_config
from targets.mysql import config as mysql_config
from targets.postgres import config as postgres_config

TargetConfig = files_config.FilesTargetConfig | postgres_config.PostgresTargetConfig | mysql_config.MysqlTargetConfig


@dataclass(frozen=True)
class TargetKind:
    name: str
    schema: dict[str, Any]
    make_config: Callable[[str, Mapping[str, Any]], TargetConfig]
    database: bool = False  # backed up as dumps, with a database engine


KINDS: dict[str, TargetKind] = {
    "files": TargetKind("files", files_config.SCHEMA, files_config.make_files_target),
    "postgres": TargetKind("postgres", postgres_config.SCHEMA, postgres_config.make_postgres_target, database=True),
    "mysql": TargetKind("mysql", mysql_config.SCHEMA, mysql_config.make_mysql_target, database=True),
}


DATABASE_KINDS = frozenset(name for name, kind in KINDS.items() if kind.database)


def make_target_config(name: str, raw: Mapping[str, Any]) -> TargetConfig:
    """Typed configuration of target ``name``; ``raw`` must have passed the schema."""
    return KINDS[raw["kind"]].make_config(name, raw)
