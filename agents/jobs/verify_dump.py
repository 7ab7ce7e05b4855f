"""Verifying a database dump: load it into a scratch database and recompute every table's checksum there.

Given a dump, its manifest snapshot and the target's kind (which names the
engine -- never guessed from the manifest): start the scratch database (in a
thread) and read the manifest snapshot's file without a lock (while the
repository check runs; nothing is used or loaded before it passed) → check the
manifest's digest and that it is that engine's → check that it names this dump
→ start restic's dump of it (its key and index while the scratch database may
still be starting) → stream the dump into the loader of a throwaway instance
(or a scratch server's new database), hashing it → compare the stream's digest with the
manifest's → recompute the schema digest and each table's row count and
checksum exactly as at backup time → a finding for every difference. A
pseudo-database the engine verifies by digest only (PostgreSQL's ``@globals``)
stops after the digest: loading roles into a scratch instance proves nothing more.

Which side is at fault decides the verdict: a stored dump whose digest differs
is a failure of the backup; a loader that fails on an intact dump (a scratch
disk full, a scratch server too old) means the verification could not run.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents import process
from agents.config.model import AgentConfig
from agents.contract.errors import DrillError
from agents.contract.records import BackupRecord, Compared, DumpCheck
from agents.engines import engine_for
from agents.engines.base import ChecksumsTookTooLong, Command, DatabaseEngine
from agents.jobs.beside_check import BesideCheck
from agents.jobs.catalog import StoredBackup
from agents.jobs.manifest_read import read_beside_check, vouched_manifest
from agents.jobs.restorestream import DumpStream, StreamedRestore
from agents.jobs.starting import Starting
from agents.jobs.verify_common import CouldNotVerify, note_damage
from agents.records import RecordDraft, VerifyDraft
from agents.restic.runner import Restic, ResticError
from agents.scratch.account import ScratchUnusable
from agents.state import StateDir
from targets.tables import DatabaseUnavailable, TableManifest, compare_tables

log = logging.getLogger(__name__)


def _load_manifest(
    restic: Restic, backup: StoredBackup, vouching: BackupRecord, record: RecordDraft[VerifyDraft],
    early: BesideCheck[bytes],
) -> dict[str, Any] | None:
    """The manifest the record vouched for, as JSON; None (with findings) when it is not one."""
    data = vouched_manifest(restic, backup, vouching, record, early)
    if data is None:
        return None
    try:
        manifest = json.loads(data)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), list):
            raise ValueError("not a manifest object")
    except ValueError as error:
        record.add("manifest_unreadable", "error", f"the manifest is not valid: {error}")
        return None
    return manifest


@dataclass(frozen=True)
class _DumpToVerify:
    """What the manifest says to restore and compare."""

    manifest: dict[str, Any]
    filename: str  # the dump's path in its snapshot
    digest: str  # the dump's digest at backup time
    method: str  # how its tables were checksummed
    columns_digested: frozenset[str]  # tables summed with each column digested first (rows over max_allowed_packet)
    tables: int  # how many tables the manifest lists


def verify_dump_backup(
    config: AgentConfig, kind: str, restic: Restic, backup: StoredBackup, vouching: BackupRecord, scratch: str,
    state: StateDir, record: RecordDraft[VerifyDraft], repository_sound: Callable[[], bool],
) -> None:
    """Verify one dump of a ``kind`` target; add a finding for every difference.

    The scratch database starts and the manifest is read without a lock while the repository is checked;
    ``repository_sound`` waits for the check (which holds the repository's exclusive lock), and nothing read is
    used, nothing loaded, unless it passed. Raises :class:`CouldNotVerify`.
    """
    try:
        engine = engine_for(kind)
    except DrillError as error:
        raise CouldNotVerify(str(error)) from error
    database = backup.database or ""
    record.details.database = database
    record.details.compared = Compared(tables=0, rows=0)
    early = read_beside_check(restic, backup, vouching)
    try:
        _verify_dump(config, engine, kind, restic, backup, vouching, scratch, state, record, repository_sound, early)
    finally:
        early.drop()


def _verify_dump(
    config: AgentConfig, engine: DatabaseEngine, kind: str, restic: Restic, backup: StoredBackup,
    vouching: BackupRecord, scratch: str, state: StateDir, record: RecordDraft[VerifyDraft],
    repository_sound: Callable[[], bool], early: BesideCheck[bytes],
) -> None:
    database = backup.database or ""
    if engine.digest_only(database):
        dump = _read_manifest(engine, kind, restic, backup, vouching, record, early) if repository_sound() else None
        if dump is None:
            return
        with record.phase("restore"):
            try:
                streamed = _stream(restic, backup, dump.filename, record)
            except _Damaged:
                return
        _check_stream(streamed, dump.digest, record)
        record.details.scratch = record.details.scratch.model_copy(
            update={"where": "none (verified by the dump's digest alone)"})
        return
    try:
        with contextlib.ExitStack() as stack:
            # The scratch database starts in a thread while the check ends and the manifest is read; restic's
            # dump starts as soon as the manifest names the file, and waits for the loader.
            starting = Starting(engine.restore_target(config.scratch, scratch, database, state), "scratch")
            stack.callback(lambda: record.add_phase("scratch_start", starting.seconds))
            stack.callback(starting.close)
            dump = _read_manifest(engine, kind, restic, backup, vouching, record, early) if repository_sound() \
                else None
            if dump is None:
                return
            stream = _dump_stream(restic, backup, dump.filename)
            stack.callback(stream.abandon)  # stopped unread when the scratch database did not start
            target = starting.result()
            record.details.scratch = record.details.scratch.model_copy(update={"where": target.where})
            problem = target.checksum_problem(dump.method)
            if problem is not None:
                raise CouldNotVerify(f"the scratch database cannot recompute this manifest: {problem}")
            with record.phase("restore"):
                streamed = _load(stream, target.load_command(dump.tables), record, config.scratch.load_timeout)
            intact = _check_stream(streamed, dump.digest, record)
            if _tried_to_escape(engine.escape_markers, streamed.loader_stderr, target.server_log(), record):
                return
            if streamed.loader_code != 0:
                said = explain_loader_failure(streamed.loader_stderr)
                server_said = target.server_problem()
                said += f"; the scratch server logged: {server_said}" if server_said else ""
                if intact:
                    raise CouldNotVerify(f"the dump is intact, but the scratch database could not load it: {said}")
                record.add("restore_failed", "error", f"the altered dump could not be loaded: {said}")
                return
            with record.phase("compare"):
                restored = target.checksums(dump.method, dump.columns_digested, config.scratch.checksum_timeout)
    except _Damaged:
        return
    except ScratchUnusable as error:
        raise CouldNotVerify(f"no scratch database: {error}") from error
    except ChecksumsTookTooLong as error:
        raise CouldNotVerify(f"recomputing the checksums in the restored database took longer than "
                             f"scratch.checksum_timeout ({error.seconds:.0f} s) and was stopped (a tenant's tables "
                             f"can be made slow to read on purpose); the server said: {error.detail}") from error
    except DatabaseUnavailable as error:
        raise CouldNotVerify(f"the restored database could not be read: {error}") from error
    _compare(dump.manifest, restored, record)


def _read_manifest(
    engine: DatabaseEngine, kind: str, restic: Restic, backup: StoredBackup, vouching: BackupRecord,
    record: RecordDraft[VerifyDraft], early: BesideCheck[bytes],
) -> _DumpToVerify | None:
    """The manifest, read and checked against the record and the engine; None (with findings) when it cannot be
    used. Raises :class:`CouldNotVerify` when it cannot be read, or names a checksum this agent cannot compute."""
    database = backup.database or ""
    manifest = _load_manifest(restic, backup, vouching, record, early)
    if manifest is None:
        return None
    if manifest.get("schema") != engine.manifest_schema:
        record.add("manifest_unreadable", "error",
                   f"the manifest is a {str(manifest.get('schema'))[:80]!r}, not a {engine.manifest_schema} of a "
                   f"{kind} target")
        return None
    method = str(manifest.get("checksum", ""))
    if method not in engine.checksum_methods and not engine.digest_only(database):
        raise CouldNotVerify(f"the manifest's tables were checksummed as {method[:200]!r}, which this agent cannot "
                             "recompute (a newer agent made it?)")
    # The dump the manifest names inside; older manifest snapshots also name it in a tag (both must agree).
    inside = manifest.get("snapshot_id")
    named = [inside if isinstance(inside, str) else None]
    named += [backup.manifest_for] if backup.manifest_for is not None else []
    wrong = [i for i in named if not backup.names_this_dump(i)]
    if wrong:
        record.add("dump_snapshot_mismatch", "error",
                   f"the manifest was made for dump snapshot {(wrong[0] or '(none named)')[:64]}, but this job's "
                   f"dump is {backup.snapshot_id}: the dump was written again after the backup", backup.snapshot_id)
    dump = manifest.get("dump")
    dump = dump if isinstance(dump, dict) else {}
    name = str(dump.get("filename") or engine.dump_filename(database))
    if "/" in name or name in (".", "..") or "\0" in name:
        record.add("manifest_unreadable", "error", f"the manifest names the dump {name!r}, not a file name")
        return None
    tables = [t for t in manifest["tables"] if isinstance(t, dict)]
    digested = frozenset(str(t.get("name")) for t in tables if t.get("columns_digested") is True)
    return _DumpToVerify(manifest, "/" + name, str(dump.get("digest", "")), method, digested, len(tables))


def _tried_to_escape(markers: tuple[str, ...], loader_stderr: tuple[str, ...], server_log: str,
                     record: RecordDraft[VerifyDraft]) -> bool:
    """Add ``dump_tried_to_escape`` when the loader or the server says the dump tried to run something outside
    the database (a program, a client command): the sandbox stopped it, but such a dump is not a pass."""
    said = [line.strip() for line in (*loader_stderr, *server_log.splitlines())
            if any(marker.lower() in line.lower() for marker in markers)]
    if not said:
        return False
    record.add("dump_tried_to_escape", "error",
               f"the dump tried to run a program or client command while it was loaded (the sandbox refused it): "
               f"{said[0][:500]}")
    return True


def explain_loader_failure(stderr: tuple[str, ...]) -> str:
    """The loader's own words: its first error line (the cause; later ones are consequences), else its last line."""
    lines = [line.strip() for line in stderr if line.strip()]
    errors = [line for line in lines if any(word in line for word in ("error", "ERROR", "FATAL", "PANIC"))]
    first = errors[0] if errors else (lines[-1] if lines else "no message")
    return first if len(first) <= 500 else first[:500] + "…"


def _compare(manifest: dict[str, Any], restored: TableManifest, record: RecordDraft[VerifyDraft]) -> None:
    expected_tables = [t for t in manifest["tables"] if isinstance(t, dict)]
    record.details.compared = record.details.compared.model_copy(
        update={"tables": len(restored.tables), "rows": sum(t.rows for t in restored.tables)})
    if restored.schema_digest != manifest.get("schema_digest"):
        record.add("schema_digest_mismatch", "error",
                   f"the restored schema has digest {restored.schema_digest}, the manifest says "
                   f"{manifest.get('schema_digest')}")
    for difference in compare_tables(expected_tables, restored.tables):
        record.add(difference.code, "error", difference.detail, difference.table)
    non_transactional = manifest.get("non_transactional") or []
    for table in non_transactional if isinstance(non_transactional, list) else []:
        record.add("non_transactional_table", "info",
                   f"{table} is not transactional: its manifest checksum was exact only if nothing wrote to it "
                   "during the backup", str(table))


class _Damaged(Exception):
    """restic could not deliver the dump because stored data is bad (the finding is in the record)."""


def _stream(restic: Restic, backup: StoredBackup, filename: str, record: RecordDraft[VerifyDraft]) -> StreamedRestore:
    return _load(_dump_stream(restic, backup, filename), None, record)


def _dump_stream(restic: Restic, backup: StoredBackup, filename: str) -> DumpStream:
    try:
        return DumpStream(restic, backup.snapshot_id, filename)
    except (OSError, RuntimeError) as error:  # no pipe or no thread to be had
        raise CouldNotVerify(f"restic's dump could not be started: {error}") from error


def _load(stream: DumpStream, loader: Command | None, record: RecordDraft[VerifyDraft],
          timeout: float | None = None) -> StreamedRestore:
    """The dump streamed into ``loader`` (or only hashed when None), which may run ``timeout`` seconds;
    raises :class:`_Damaged` (with the finding added) when restic found stored data bad, else
    :class:`CouldNotVerify` when it could not run."""
    try:
        return stream.into(loader, timeout=timeout)
    except ResticError as error:
        if note_damage(error, record):
            raise _Damaged from error
        raise CouldNotVerify(f"restic could not deliver the dump: {error.describe()}") from error
    except FileNotFoundError as error:
        raise CouldNotVerify(f"{error.filename} is not installed") from error
    except process.ProcessStopped as error:
        if error.why == "timeout" and timeout is not None:
            raise CouldNotVerify(f"loading the dump took longer than scratch.load_timeout ({timeout:.0f} s) and was "
                                 "stopped: a dump can stall its loader on purpose") from error
        raise CouldNotVerify(f"loading the dump stopped: {error.detail}") from error


def _check_stream(streamed: StreamedRestore, expected: str, record: RecordDraft[VerifyDraft]) -> bool:
    record.details.dump = DumpCheck(digest=streamed.digest, expected=expected, bytes=streamed.size)
    record.details.compared = record.details.compared.model_copy(update={"bytes": streamed.size})
    if streamed.digest != expected:
        record.add("dump_digest_mismatch", "error",
                   f"the dump in the repository has digest {streamed.digest}, the manifest says {expected}")
        return False
    return True
