"""The registry of database engines: an engine is listed here or it does not exist.

Every database kind of ``targets.registry`` must have exactly one engine here;
this is checked when the module is imported, so a kind added on one side only
fails at once, not in the middle of a backup.
"""

from __future__ import annotations

from agents.contract.errors import InputError
from agents.engines.base import DatabaseEngine
from agents.engines.mysql import MysqlEngine
from agents.engines.postgres import PostgresEngine
from targets.registry import DATABASE_KINDS

ENGINES: dict[str, DatabaseEngine] = {engine.kind: engine for engine in (PostgresEngine(), MysqlEngine())}

if set(ENGINES) != DATABASE_KINDS:  # pragma: no cover -- a registration mistake, caught by every test run
    raise ImportError(f"database kinds {sorted(DATABASE_KINDS)} and engines {sorted(ENGINES)} differ")


class UnknownEngine(InputError):
    code = "unknown_engine"


def engine_for(kind: str) -> DatabaseEngine:
    """The engine of target kind ``kind``. Raises :class:`UnknownEngine` for a kind that has none."""
    try:
        return ENGINES[kind]
    except KeyError:
        raise UnknownEngine(f"{kind!r} is not a database kind; database kinds: {', '.join(sorted(ENGINES))}") \
            from None
