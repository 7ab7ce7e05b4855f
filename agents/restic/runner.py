"""Runs restic against one repository: the only code that starts restic.

Given a :class:`Repository` (where, how to unlock it, its S3 credentials) a
:class:`Restic` runs the commands built in ``commands.py`` through
``agents.process``, classifies exit codes through ``exitcodes.py`` and parses
``--json`` through ``messages.py``. Every failure becomes a :class:`ResticError`
with a typed :class:`ResticOutcome`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from agents import process
from agents.contract.errors import DrillError
from agents.restic import commands, excludes, rclone
from agents.restic.exitcodes import ResticOutcome, classify_exit, explain_stderr, outcome_from_stderr
from agents.restic.features import ResticVersion, UnsupportedResticVersion, parse_version
from agents.restic.messages import (
    BackupError,
    BackupItem,
    BackupMessage,
    BackupStatus,
    BackupSummary,
    ExitError,
    Snapshot,
    parse_backup_message,
    parse_snapshots,
    parse_time,
)
from agents.restic.repository import Repository

log = logging.getLogger(__name__)

# What ``restic check`` prints once it has opened and locked the repository and listed its snapshot files, in
# 0.14 and 0.18 alike ("create exclusive lock for repository" comes before opening it in 0.18).
_CHECK_OPENED = "load indexes"


# restic outcomes that are facts about the repository, each with its finding code.
_FINDING_CODES = {
    ResticOutcome.WRONG_PASSWORD: "wrong_password",
    ResticOutcome.NO_REPOSITORY: "repository_missing",
    ResticOutcome.UNREACHABLE: "repository_unreachable",
    ResticOutcome.LOCKED: "repository_locked",
    ResticOutcome.INTERRUPTED: "interrupted",
    ResticOutcome.ACCESS_DENIED: "repository_access_denied",
    ResticOutcome.DAMAGED: "repository_damaged",
}


class ResticError(DrillError):
    """A restic command failed; ``outcome`` says how, ``stderr_tail`` says what restic said."""

    def __init__(
        self,
        outcome: ResticOutcome,
        message: str,
        *,
        repository: str = "",
        exit_code: int | None = None,
        stderr_tail: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.repository = repository
        self.exit_code = exit_code
        self.stderr_tail = tuple(stderr_tail)
        self.code = self.finding_code

    @property
    def finding_code(self) -> str:
        """The finding code of a result record for this failure."""
        return _FINDING_CODES.get(self.outcome, "restic_failed")

    def describe(self) -> str:
        """One line for a finding: what failed and restic's own words about why."""
        said = explain_stderr(self.stderr_tail)
        text = str(self)
        return f"{text} (restic: {said})" if said and said not in text else text


class DumpTooLarge(DrillError):
    """A file dumped from a snapshot is larger than the caller will read into memory."""

    code = "dump_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the file is {size} bytes, more than the {limit} bytes expected")
        self.size = size
        self.limit = limit


# Waits between tries while another restic holds the repository's lock: short at first (the restic of a job killed a
# moment ago may still be ending), then every LOCK_RETRY_EVERY seconds, up to the repository's ``lock_wait``.
LOCK_RETRY_WAITS = (2.0, 4.0, 8.0, 16.0)
LOCK_RETRY_EVERY = 30.0


def lock_retry_waits(budget: float) -> Iterator[float]:
    """The waits between tries while the repository is locked, adding up to ``budget`` seconds (the last one cut
    short); none for a budget of 0."""
    waited = 0.0
    for step in itertools.chain(LOCK_RETRY_WAITS, itertools.repeat(LOCK_RETRY_EVERY)):
        if waited >= budget:
            return
        wait = min(step, budget - waited)
        yield wait
        waited += wait


@functools.lru_cache(maxsize=8)
def detect_version(binary: str) -> ResticVersion:
    """Ask ``binary`` for its version, once per binary per process.

    Raises :class:`UnsupportedResticVersion` when it is missing or too old.
    """
    try:
        result = process.run_process(
            commands.make_version_command(binary), env=process.inherited_environment({}), timeout=30
        )
    except FileNotFoundError as exc:
        raise UnsupportedResticVersion(f"restic not found at {binary!r}: install restic 0.14 or newer") from exc
    return parse_version(result.stdout)


@dataclass(frozen=True)
class BackupRun:
    """The outcome of a ``restic backup`` that produced a snapshot.

    ``summary.snapshot_id`` is the full id on restic 0.17+ and the short id on
    0.14; :meth:`Restic.identify` gives the full id on every version.
    """

    summary: BackupSummary
    errors: tuple[BackupError, ...]
    partial: bool
    time: datetime | None = None  # the snapshot's time, when the agent set it (``--time``)


class Restic:
    """restic bound to one binary, one repository and one cache directory."""

    def __init__(
        self, binary: str, repository: Repository, cache_dir: str | None = None, marker_dir: str | None = None,
        temp_dir: str | None = None, rclone_binary: str = "rclone",
    ) -> None:
        """``marker_dir``: where to remember that a stale lock could not be removed (the
        repository was unreachable when restic was stopped), so that the next job
        removes it first. Without it, nothing is remembered. ``temp_dir``: where
        temporary files go (the agent's state directory; default: the system's).
        ``rclone_binary``: the rclone restic starts for a copy between two S3 providers."""
        self.binary = binary
        self.rclone_binary = rclone_binary
        self.repository = repository
        self.cache_dir = cache_dir
        self.marker_dir = marker_dir
        self.temp_dir = temp_dir
        self.version = detect_version(binary)

    @property
    def _stale_lock_marker(self) -> str | None:
        if self.marker_dir is None:
            return None
        return os.path.join(self.marker_dir, f"{self.repository.name}.stale-lock")

    # -- plumbing -----------------------------------------------------------------
    def _flags(self, *, json: bool) -> tuple[str, ...]:
        return commands.make_global_flags(self.version, self.cache_dir, json=json)

    def _env(self, extra: Mapping[str, str] | None = None, repository: Repository | None = None) -> dict[str, str]:
        address = repository or self.repository
        env = dict(address.env)
        env.update(address.restic_environment())
        if extra:
            env.update(extra)
        return process.inherited_environment(env)

    def _run(
        self,
        argv: tuple[str, ...],
        *,
        extra_env: Mapping[str, str] | None = None,
        address: Repository | None = None,
        ok: Iterable[ResticOutcome] = (ResticOutcome.SUCCESS,),
        timeout: float | None = None,
        stall: process.StallWatch | None = None,
        stdin: IO[bytes] | None = None,
        on_stdout_line: process.LineCallback | None = None,
        on_stderr_line: process.LineCallback | None = None,
        stdout_to: IO[bytes] | None = None,
        cancellation: process.Cancellation = process.CANCELLATION,
        on_start: Callable[[int], None] | None = None,
    ) -> tuple[process.ProcessResult, ResticOutcome]:
        opened_with = self.repository
        try:
            result = process.run_process(
                argv,
                env=self._env(extra_env, address or opened_with),
                timeout=timeout,
                stall=stall,
                stdin=stdin,
                on_stdout_line=on_stdout_line,
                on_stderr_line=on_stderr_line,
                stdout_to=stdout_to,
                cancellation=cancellation,
                on_start=on_start,
            )
        except process.ProcessStopped as stopped:
            if stopped.why == "cancelled":
                outcome = ResticOutcome.INTERRUPTED
            else:
                outcome = outcome_from_stderr(stopped.stderr_tail) or ResticOutcome.UNREACHABLE
            raise ResticError(
                outcome,
                f"restic {_subcommand(argv)} on repository {self.repository.name!r} stopped: {stopped.detail}",
                repository=self.repository.name,
                stderr_tail=stopped.stderr_tail,
            ) from stopped
        outcome = classify_exit(result.returncode, self.version, result.stderr_tail)
        # A command that read from a pipe or wrote to a file is not run twice (it may have); the others are.
        if (outcome is ResticOutcome.WRONG_PASSWORD and address is None and self._fall_back(opened_with)
                and stdin is None and stdout_to is None):
            if stall is not None:
                stall.restart()
            return self._run(argv, extra_env=extra_env, ok=ok, timeout=timeout, stall=stall,
                                 on_stdout_line=on_stdout_line, on_stderr_line=on_stderr_line,
                                 cancellation=cancellation, on_start=on_start)
        if outcome not in ok:
            raise ResticError(
                outcome,
                f"restic {_subcommand(argv)} failed on repository {self.repository.name!r} "
                f"(exit {result.returncode}: {outcome.value})",
                repository=self.repository.name,
                exit_code=result.returncode,
                stderr_tail=result.stderr_tail,
            )
        return result, outcome

    def _fall_back(self, opened_with: Repository) -> bool:
        """After restic found no key for the password it was given (in ``opened_with``): when that was the agent's
        own key, go on with the configured password, for the rest of the job. True when it was: the caller runs the
        command again if it read and wrote nothing (restic stops at the key, before any data), and a command fed
        from a pipe or writing to a file fails its job (the next job has a key again)."""
        configured = opened_with.configured
        if configured is None:
            return False
        if self.repository is opened_with:  # once, however many commands ran on the key at that moment
            log.warning("the agent's own key no longer opens repository %s (removed, or replaced after the "
                        "operator's key changed); going on with the configured password", configured.name)
            self.repository = configured
        return True

    def _run_unlocking(self, argv: tuple[str, ...], **kwargs: object) -> process.ProcessResult:
        """Run; while the repository is locked, remove stale locks and try again (:func:`lock_retry_waits`), for
        up to the repository's ``lock_wait``: a restic of a job killed a moment ago may still be ending, and
        another job's ``check`` or ``prune`` holds the lock exclusively while it runs.

        ``restic unlock`` only removes locks of processes that no longer exist, so
        a live backup elsewhere is never disturbed. Raises :class:`ResticError` (``LOCKED``) when the lock is
        still held after ``lock_wait``.
        """
        waits = lock_retry_waits(self.repository.lock_wait)
        while True:
            try:
                return self._run(argv, **kwargs)[0]  # type: ignore[arg-type]
            except ResticError as error:
                if error.outcome is not ResticOutcome.LOCKED:
                    raise
                wait = next(waits, None)
                if wait is None:
                    raise ResticError(
                        error.outcome, f"{error} (still locked after waiting {self.repository.lock_wait:.0f}s, the "
                        f"repository's lock_wait)", repository=error.repository, exit_code=error.exit_code,
                        stderr_tail=error.stderr_tail) from error
                log.warning("repository %s is locked; removing stale locks and retrying in %.0fs",
                            self.repository.name, wait)
                self.unlock()
                cancellation = kwargs.get("cancellation", process.CANCELLATION)
                assert isinstance(cancellation, process.Cancellation)
                if cancellation.wait(wait):  # this command's own, which the agent's stop cancels too
                    raise
                if isinstance(stall := kwargs.get("stall"), process.StallWatch):
                    stall.restart()  # the next attempt must open the repository within connect_timeout again

    def remove_remembered_stale_lock(self) -> None:
        """If an earlier stopped run could not remove its lock, remove it now (stale locks only): before a job's
        first command, which would otherwise find the repository locked and wait to retry."""
        marker = self._stale_lock_marker
        if marker is not None and os.path.exists(marker):
            self._run(commands.make_unlock_command(self.binary, self._flags(json=False)),
                      timeout=self.repository.connect_timeout)
            with contextlib.suppress(FileNotFoundError):  # another job of this agent removed it meanwhile
                os.unlink(marker)
            log.info("removed the stale lock an earlier, stopped run left in %s", self.repository.name)

    # -- commands -----------------------------------------------------------------
    def check_reachable(self) -> None:
        """Open the repository within ``connect_timeout`` or raise.

        restic retries an unreachable backend for many minutes; this bounds the
        wait so that a missing bucket or a dead endpoint fails the job promptly.
        """
        self._run(
            commands.make_cat_config_command(self.binary, self._flags(json=False)),
            timeout=self.repository.connect_timeout,
        )

    def repository_id(self) -> str:
        """restic's id of the repository (``restic cat config``): the same for every host that opens it, whatever
        they call it. Raises :class:`ResticError`, and ``ResticError`` (``FATAL``) when the config is not JSON."""
        result, _ = self._run(commands.make_cat_config_command(self.binary, self._flags(json=False)),
                              timeout=self.repository.connect_timeout)
        try:
            found = json.loads(result.stdout).get("id")
        except (ValueError, AttributeError):
            found = None
        if not isinstance(found, str) or not re.fullmatch(r"[0-9a-f]{64}", found):
            raise ResticError(ResticOutcome.FATAL, f"restic cat config of {self.repository.name!r} gave no "
                              "repository id", repository=self.repository.name)
        return found

    def init(self) -> bool:
        """Create the repository. Returns False when it already exists."""
        try:
            self.check_reachable()
            return False
        except ResticError as error:
            if error.outcome not in (ResticOutcome.NO_REPOSITORY, ResticOutcome.FATAL):
                raise
        self._run(
            commands.make_init_command(self.binary, self._flags(json=False)),
            timeout=self.repository.connect_timeout * 2,
        )
        return True

    def unlock(self, *, cancellation: process.Cancellation = process.CANCELLATION) -> None:
        """Remove the locks of restic processes that are gone (never a live one's). Raises :class:`ResticError`."""
        self._run(commands.make_unlock_command(self.binary, self._flags(json=False)),
                  timeout=self.repository.connect_timeout, cancellation=cancellation)

    def snapshots(
        self, *, host: str | None = None, snapshot_ids: Sequence[str] = (), first_contact: bool = False,
        beside_check: bool = False,
    ) -> list[Snapshot]:
        """List snapshots (optionally of one host, or these ids), oldest first.

        ``first_contact``: among the job's first commands on the repository, bounded by the
        repository's ``connect_timeout`` so that an unreachable repository fails
        promptly instead of being retried for many minutes (a stale lock an earlier,
        stopped run left is removed first, unless ``beside_check``: the check does that).

        ``beside_check``: list without a lock (``--no-lock``), beside this job's ``restic check``, which holds the
        repository's exclusive lock while it runs -- a locked listing would wait for it. Listing only reads the
        snapshot files: while the check holds the lock nothing changes them; before it has it, or while it waits
        for another host's lock, a ``forget`` there may remove a snapshot file mid-listing (restic leaves it out,
        as a locked listing a moment later would), and a ``tag`` there may show a snapshot's old and new copy (an
        ``unrecorded_snapshot`` warning, never a pass).
        """
        timeout = self.repository.connect_timeout if first_contact else self.repository.stall_timeout
        if first_contact and not beside_check:
            self.remove_remembered_stale_lock()
        flags = self._flags(json=True) + (("--no-lock",) if beside_check else ())
        result = self._run_unlocking(
            commands.make_snapshots_command(self.binary, flags, host=host, snapshot_ids=snapshot_ids),
            timeout=timeout,
        )
        return parse_snapshots(result.stdout)

    def resolve_snapshot(self, snapshot_id: str) -> Snapshot:
        """Look up one snapshot by full or short id (restic 0.14 prints short ids)."""
        found = self.snapshots(snapshot_ids=[snapshot_id])
        if len(found) != 1:
            raise ResticError(
                ResticOutcome.FATAL,
                f"snapshot {snapshot_id} not found in repository {self.repository.name!r}",
                repository=self.repository.name,
            )
        return found[0]

    def backup_files(
        self,
        paths: Sequence[str],
        *,
        exclusions: excludes.Exclusions,
        exclude_file: str,
        host: str,
        tags: Sequence[str],
        parent: str | None,
        force: bool,
        on_status: Callable[[BackupStatus], None] | None = None,
        on_item: Callable[[BackupItem], None] | None = None,
        cancellation: process.Cancellation = process.CANCELLATION,
    ) -> BackupRun:
        """Back up ``paths`` (absolute; restic walks them) leaving out ``exclusions``; the summary carries the
        full snapshot id on 0.17+. Cancelling ``cancellation`` stops restic.

        ``exclude_file``: where the exclusions are written for restic (removed afterwards; the caller names it so
        that a killed job's file can be found). ``on_item`` receives every file and directory restic stores.
        Exit 3 (some source data unreadable) still yields a snapshot: the run is marked ``partial`` and carries
        restic's error messages.
        """
        fd = os.open(exclude_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(exclusions.file_text())
            moment, time_flag = self._snapshot_time()
            argv = commands.make_backup_command(
                self.binary,
                self._flags(json=True),
                paths=paths,
                exclude_file=exclude_file,
                excludes=exclusions.argv_patterns,
                host=host,
                tags=tags,
                parent=parent,
                force=force,
                time=time_flag,
            )
            return self._backup(argv, on_status=on_status, on_item=on_item, time=moment, cancellation=cancellation)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(exclude_file)

    def backup_stdin(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        host: str,
        tags: Sequence[str],
        cancellation: process.Cancellation = process.CANCELLATION,
        stall: process.StallWatch | None = None,
    ) -> BackupRun:
        """Store ``stream`` as one file ``filename`` in a new snapshot (id short on restic 0.14).

        Cancelling ``cancellation`` before the stream ends stops restic without a snapshot. ``stall``: how restic's
        progress is watched, for a stream that may pause on purpose (default: it must report within the
        repository's ``connect_timeout``, then never stall for ``stall_timeout``).
        """
        moment, time_flag = self._snapshot_time()
        argv = commands.make_backup_stdin_command(
            self.binary, self._flags(json=True), filename=filename, host=host, tags=tags, time=time_flag,
        )
        return self._backup(argv, stdin=stream, cancellation=cancellation, time=moment, stall=stall)

    def _snapshot_time(self) -> tuple[datetime | None, str | None]:
        """The time to give a new snapshot and restic's ``--time`` value for it, where restic would not tell it
        (before 0.17) and the snapshot's full id can be read off a local repository's folder (:meth:`identify`);
        else (None, None): restic's own clock."""
        if self.version.prints_full_snapshot_ids or self.repository.local_path is None:
            return None, None
        moment = datetime.now(UTC)
        return moment, commands.snapshot_time_flag(moment)

    def _backup(
        self,
        argv: tuple[str, ...],
        *,
        stdin: IO[bytes] | None = None,
        on_status: Callable[[BackupStatus], None] | None = None,
        on_item: Callable[[BackupItem], None] | None = None,
        cancellation: process.Cancellation = process.CANCELLATION,
        time: datetime | None = None,
        stall: process.StallWatch | None = None,
    ) -> BackupRun:
        # The backup is often the job's first contact with the repository: it must
        # report progress within connect_timeout, then never stall for stall_timeout.
        self.remove_remembered_stale_lock()
        if stall is None:
            stall = process.StallWatch(self.repository.stall_timeout, first_within=self.repository.connect_timeout)
        messages: list[BackupMessage] = []
        last_progress: list[tuple[int, int]] = [(-1, -1)]

        def take(line: str) -> None:
            message = parse_backup_message(line)
            if message is None:
                return
            if isinstance(message, BackupStatus):
                progress = (message.files_done, message.bytes_done)
                if progress != last_progress[0]:
                    last_progress[0] = progress
                    stall.progress()
                if on_status is not None:
                    on_status(message)
                return
            if isinstance(message, BackupItem):
                if on_item is not None:
                    on_item(message)
                return
            messages.append(message)

        try:
            _result, outcome = self._run(
                argv,
                ok=(ResticOutcome.SUCCESS, ResticOutcome.PARTIAL),
                stall=stall,
                stdin=stdin,
                on_stdout_line=take,
                on_stderr_line=take,
                cancellation=cancellation,
                extra_env=commands.SNAPSHOT_TIME_ZONE if time is not None else None,
            )
        except Exception:
            # An interrupted or stalled restic (or one stopped because taking its report failed) may leave its lock
            # behind; remove it now (stale locks only) so the next run is not blocked.
            self._unlock_quietly()
            raise
        summaries = [m for m in messages if isinstance(m, BackupSummary)]
        if not summaries or not summaries[-1].snapshot_id:
            raise ResticError(
                ResticOutcome.FATAL,
                "restic backup ended without a summary naming a snapshot",
                repository=self.repository.name,
            )
        summary = summaries[-1]
        errors = tuple(m for m in messages if isinstance(m, BackupError))
        partial = outcome is ResticOutcome.PARTIAL or bool(errors) or any(
            isinstance(m, ExitError) and m.code == 3 for m in messages
        )
        return BackupRun(summary, errors, partial, time)

    def identify(self, run: BackupRun) -> tuple[str, str | None, datetime]:
        """Full id, tree (when known without another call) and time of a new snapshot.

        restic 0.17+ prints the full id and the start time: no call. restic 0.14
        prints a short id: in a local repository the snapshot's file bears the full id (the time is the one the
        agent gave it); elsewhere, or when two files share the short id, one ``snapshots`` call resolves it and
        also gives the tree. Raises :class:`ResticError`.
        """
        summary = run.summary
        if self.version.prints_full_snapshot_ids and summary.backup_start:
            return summary.snapshot_id, None, parse_time(summary.backup_start)
        full_id = self._local_snapshot_file(summary.snapshot_id)
        if full_id is not None and run.time is not None:
            return full_id, None, run.time
        snapshot = self.resolve_snapshot(summary.snapshot_id)
        return snapshot.id, snapshot.tree, snapshot.time

    def _local_snapshot_file(self, short_id: str) -> str | None:
        """The one snapshot id of a local repository that starts with ``short_id`` (restic names each snapshot's
        file by its id); None when the repository is not local, or none or several match."""
        folder = self.repository.local_path
        if folder is None or not re.fullmatch(r"[0-9a-f]{8,64}", short_id):
            return None
        try:
            names = [n for n in os.listdir(os.path.join(folder, "snapshots")) if n.startswith(short_id)]
        except OSError:
            return None
        if len(names) != 1 or not re.fullmatch(r"[0-9a-f]{64}", names[0]):
            return None
        return names[0]

    def _unlock_quietly(self) -> None:
        try:
            self.unlock()
        except ResticError as error:
            log.warning("could not remove stale locks from %s: %s", self.repository.name, error.describe())
            marker = self._stale_lock_marker
            if marker is not None:
                os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
                with open(marker, "w", encoding="utf-8") as handle:
                    handle.write("a restic run was stopped while the repository was unreachable\n")

    def dump(
        self, snapshot_id: str, path: str, *, limit: int = 1 << 30, beside_check: bool = False,
        cancellation: process.Cancellation = process.CANCELLATION,
    ) -> bytes:
        """Return the content of one small file of a snapshot (a manifest), binary safe.

        The file goes through a temporary file and is read into memory only when it is at most ``limit`` bytes
        (else :class:`DumpTooLarge`). restic prints no progress while dumping, so the whole dump is bounded by
        ``stall_timeout``; large files are restored, not dumped. ``beside_check``: without a lock (``--no-lock``),
        beside this job's ``restic check``; data a ``prune`` elsewhere removes meanwhile makes it fail, so the caller
        reads again with a lock before it takes a failure for damage.
        """
        flags = self._flags(json=False) + (("--no-lock",) if beside_check else ())
        with tempfile.TemporaryFile(dir=self.temp_dir) as out:
            self._run_unlocking(  # restic takes its lock before it writes a byte: a retry appends nothing
                commands.make_dump_command(self.binary, flags, snapshot_id, path),
                timeout=self.repository.stall_timeout,
                stdout_to=out,
                cancellation=cancellation,
            )
            size = out.tell()
            if size > limit:
                raise DumpTooLarge(size, limit)
            out.seek(0)
            return out.read()

    def dump_to(self, snapshot_id: str, path: str, out: IO[bytes], stall: process.StallWatch, *,
                cancellation: process.Cancellation = process.CANCELLATION) -> None:
        """Write one file of a snapshot (a database dump) to ``out`` as restic reads it.

        restic prints no progress while dumping: the caller reports progress to
        ``stall`` as bytes arrive, so a dump that stops flowing is stopped.
        Raises :class:`ResticError`.
        """
        self._run_unlocking(
            commands.make_dump_command(self.binary, self._flags(json=False), snapshot_id, path),
            stall=stall,
            stdout_to=out,
            cancellation=cancellation,
        )

    def restore(self, snapshot_id: str, target_dir: str, *, beside_check: bool = False,
                cancellation: process.Cancellation = process.CANCELLATION,
                on_start: Callable[[int], None] | None = None) -> None:
        """Restore a whole snapshot under ``target_dir``; ``on_start`` is given each restic's pid as it starts.

        restic 0.14 prints no progress without a terminal, so a restore is bounded
        by the repository's ``stall_timeout`` only from 0.16 on (JSON status).
        ``beside_check``: without a lock (``--no-lock``), beside this job's ``restic check``; data a ``prune``
        elsewhere removes meanwhile makes it fail, so the caller restores again with a lock before it takes a
        failure for damage (:mod:`agents.jobs.beside_check`).
        """
        stall = process.StallWatch(self.repository.stall_timeout) if self.version.has_json_restore else None
        flags = self._flags(json=self.version.has_json_restore) + (("--no-lock",) if beside_check else ())

        def take(line: str) -> None:
            if stall is not None and '"status"' in line:
                stall.progress()

        # A check of the same repository (another job of this scratch host) holds an exclusive lock for a while:
        # wait for it as any other command does, rather than fail the verification.
        self._run_unlocking(
            commands.make_restore_command(self.binary, flags, snapshot_id, target_dir),
            stall=stall,
            on_stdout_line=take,
            cancellation=cancellation,
            on_start=on_start,
        )

    def check(self, read_data_subset: str | None, *, first_contact: bool = False) -> tuple[bool, tuple[str, ...]]:
        """Run ``restic check``; return (no errors found, the lines that describe errors).

        ``first_contact``: the job's first command on the repository (see :meth:`snapshots`): a stale lock an
        earlier, stopped run left is removed first, and restic must say it opened and locked the repository
        within its ``connect_timeout``; after that the check may take as long as it needs (reading data, it prints
        nothing for long stretches). A check stopped on the way may leave its exclusive lock: it is removed (stale
        locks only), or remembered for the next job when the repository cannot be reached.
        Raises :class:`ResticError` when the check could not run (unreachable, wrong password, …).
        """
        lines: list[str] = []
        stall = None
        if first_contact:
            self.remove_remembered_stale_lock()
            stall = process.StallWatch(math.inf, first_within=self.repository.connect_timeout)

        def take(line: str) -> None:
            lines.append(line)
            if stall is not None and line.startswith(_CHECK_OPENED):
                stall.progress()

        try:
            self._run_unlocking(
                commands.make_check_command(self.binary, self._flags(json=False), read_data_subset),
                stall=stall,
                on_stdout_line=take,
                on_stderr_line=lines.append,
            )
        except ResticError as error:
            if error.exit_code is None:  # stopped here (stalled, interrupted), perhaps holding its lock
                self._unlock_quietly()
            if error.outcome not in (ResticOutcome.FATAL, ResticOutcome.DAMAGED):
                raise
            # restic ends a check that found damage with "repository contains errors"
            # (0.14 and 0.18); any other fatal exit means the check could not run.
            if not any("repository contains errors" in line for line in lines):
                raise
            telling = ("error", "does not match", "not found", "missing", "invalid", "damaged")
            problems = tuple(
                line.strip() for line in lines
                if any(word in line.lower() for word in telling) and "contains errors" not in line
            ) or ("restic check: repository contains errors",)
            return False, problems
        return True, ()

    def copy_from(self, source: Repository, snapshot_ids: Sequence[str]) -> None:
        """Copy ``snapshot_ids`` from ``source`` into this repository.

        When the two need different backend credentials (two S3 providers or
        accounts), both are opened through restic's ``rclone:`` backend, each as
        a remote of its own (see ``rclone.py``). Raises :class:`ResticError`, also
        when the credentials differ and a repository is not on S3.
        """
        destination = self.repository
        flags = self._flags(json=False)
        clash = rclone.credentials_clash(source, destination)
        if clash:
            try:
                source, destination = rclone.copy_pair(source, destination)
            except rclone.NotTranslatable as exc:
                raise ResticError(
                    ResticOutcome.FATAL,
                    f"cannot copy from {source.name!r} to {self.repository.name!r}: their env files set "
                    f"{', '.join(clash)} differently and {exc}; use one set of credentials, or give the "
                    "repositories as rclone: URLs with their remotes in the env files",
                    repository=self.repository.name,
                ) from exc
            flags += ("-o", f"rclone.program={self.rclone_binary}")
        extra = dict(source.env)
        extra.update(source.restic_environment(prefix="RESTIC_FROM_"))
        self._run_unlocking(
            commands.make_copy_command(self.binary, flags, snapshot_ids),
            extra_env=extra,
            address=destination,
            stall=process.StallWatch(self.repository.stall_timeout * 4),
        )

    def forget_quietly(self, snapshot_ids: Sequence[str]) -> bool:
        """Forget snapshots (full or short ids) that must not be mistaken for good ones; True when done. Runs also
        while the agent is being stopped: what it forgets is what the stop would otherwise leave behind."""
        try:
            self.forget(snapshot_ids, prune=False, cancellation=process.Cancellation())
        except ResticError as error:
            log.error("could not forget %s in %s: %s", snapshot_ids, self.repository.name, error.describe())
            return False
        return True

    def forget(self, snapshot_ids: Sequence[str], *, prune: bool,
               cancellation: process.Cancellation = process.CANCELLATION) -> None:
        """Remove exactly these snapshots, then (optionally) the data only they used."""
        if not snapshot_ids:
            return
        self._run_unlocking(commands.make_forget_command(self.binary, self._flags(json=False), snapshot_ids),
                            cancellation=cancellation)
        if prune:
            self._run_unlocking(commands.make_prune_command(self.binary, self._flags(json=False)))


_SUBCOMMANDS = frozenset(
    {"init", "cat", "backup", "snapshots", "dump", "copy", "forget", "prune", "unlock", "restore", "check"}
)


def _subcommand(argv: Sequence[str]) -> str:
    """The restic subcommand in ``argv``, for messages."""
    return next((arg for arg in argv[1:] if arg in _SUBCOMMANDS), "command")


def default_binary() -> str:
    """The restic to use: ``$DRILL_RESTIC`` if set, else ``restic`` on PATH."""
    return os.environ.get("DRILL_RESTIC", "restic")
