"""The one contract a database engine fulfils: capture a database with its manifest, restore it, read it back.

An engine is one module in ``agents/engines/`` built on its package in
``targets/`` (config, pure command builders, checksum SQL), listed in the
registry of ``agents/engines/__init__.py``. The backup and verify jobs are the
same for every engine; only what is here differs.

Capture (backup): :meth:`DatabaseEngine.list_databases`, then per database
:meth:`DatabaseEngine.capture` opens a consistent view (PostgreSQL: an exported
snapshot; MySQL/MariaDB: a transaction started with the dump's while writes are
held) together with the dump tool's credentials; the job streams
:meth:`Capture.dump_command` into restic and, in the same view, takes
:meth:`Capture.checksums`.

Verify: :meth:`DatabaseEngine.restore_target` gives an empty database -- a
throwaway instance or a new database on a scratch server -- whose
:meth:`RestoreTarget.load_command` reads the dump on stdin; then
:meth:`RestoreTarget.checksums` recomputes the manifest there, exactly as at
backup time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from typing import Protocol

from agents.scratch.config import ScratchConfig
from agents.state import StateDir
from targets.registry import TargetConfig
from targets.tables import DatabaseUnavailable, TableManifest

Command = tuple[tuple[str, ...], dict[str, str]]  # argv and the child's whole environment


class Capture(Protocol):
    """One database, open in the consistent view its dump and its manifest share."""

    @property
    def label(self) -> str:
        """How the view was made consistent, for the manifest."""

    def preflight(self) -> str | None:
        """Why the dump cannot be taken (a dump tool too old for the server), or None."""

    def dump_command(self) -> Command:
        """The dump tool writing the dump to stdout, credentials through a private file."""

    def after_dump_started(self, dump_running: Callable[[], bool]) -> None:
        """Called once the dump runs: release what held writes, once the dump's own view is open."""

    def checksums(self) -> TableManifest:
        """Schema digest and every table's checksum, in the dump's view, and the method used. Raises
        ``DatabaseUnavailable``."""


class ChecksumsTookTooLong(DatabaseUnavailable):
    """The restored database's checksums were stopped when their time ran out (a tenant's tables can be made slow
    to read on purpose)."""

    def __init__(self, seconds: float, detail: str) -> None:
        super().__init__(f"the checksums were stopped after {seconds:.0f} s (the server said: {detail})")
        self.seconds = seconds
        self.detail = detail  # how the stopped statement ended, in the server's or the driver's words


class RestoreTarget(Protocol):
    """An empty database to load one dump into, and how to read it back."""

    @property
    def where(self) -> str:
        """For the record: ``throwaway instance`` or ``scratch server HOST``."""

    def load_command(self, tables: int) -> Command:
        """The loader reading the dump on stdin; ``tables``: how many the manifest lists (a loader may take a small
        schema in one transaction)."""

    def checksums(self, method: str, columns_digested: Collection[str] = (),
                  timeout: float | None = None) -> TableManifest:
        """The restored database's manifest, computed as at backup time by the manifest's ``method`` (under the
        original names); ``columns_digested``: the tables the manifest says were summed with each column digested
        first. Raises :class:`ChecksumsTookTooLong` when the server was stopped after ``timeout`` seconds (None:
        no limit), else ``DatabaseUnavailable``."""

    def checksum_problem(self, method: str) -> str | None:
        """Why this database cannot recompute checksums by ``method`` (a function the server lacks), or None; asked
        before the dump is loaded. Raises ``DatabaseUnavailable``."""

    def server_problem(self) -> str:
        """A throwaway server's own words on why a load failed (its log's first error line), or ''."""

    def server_log(self) -> str:
        """The end of a throwaway server's log ('' for a scratch server): read for escape attempts."""


class DatabaseEngine(Protocol):
    """A kind of database target: ``postgres``, ``mysql``."""

    @property
    def kind(self) -> str:
        """The target kind it serves (``kind:`` in the agent config)."""

    @property
    def manifest_schema(self) -> str:
        """The ``schema`` of its manifests, e.g. ``drill.manifest.postgres/v1``."""

    @property
    def checksum_methods(self) -> tuple[str, ...]:
        """Every way of computing a table's checksum it can recompute in a verification, as a manifest names
        them (in words); a capture says which one it used in its ``TableManifest.method``."""

    def list_databases(self, target: TargetConfig) -> list[str]:
        """The databases to back up. Raises ``DatabaseUnavailable`` or ``OSError`` (password file)."""

    def dump_filename(self, database: str) -> str:
        """The dump's file name in its snapshot."""

    @property
    def escape_markers(self) -> tuple[str, ...]:
        """Words the server or loader uses when a dump tried to run a program or client command in the sandbox."""

    def digest_only(self, database: str) -> bool:
        """True for a pseudo-database verified by its dump's digest alone (PostgreSQL's ``@globals``)."""

    def capture(self, target: TargetConfig, database: str,
                state: StateDir) -> contextlib.AbstractContextManager[Capture]:
        """Open ``database`` for its backup. Raises ``DatabaseUnavailable`` or ``OSError``."""

    def restore_target(self, scratch: ScratchConfig, directory: str, database: str,
                       state: StateDir) -> contextlib.AbstractContextManager[RestoreTarget]:
        """An empty database for a dump of ``database``. Raises ``ScratchUnusable``."""
