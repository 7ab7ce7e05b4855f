"""``restic check`` of a repository, reading the next part of its data each time.

A cursor per repository in ``state_dir/verify/`` moves one part further at every
check, so with ``--read-data-subset n/N`` every pack is read within N checks.
The verify job runs one part before it restores (in the background, its first
command on the repository, while it lists the snapshots and starts its scratch
instance: :class:`BackgroundCheck`); the check job runs one alone.
The verifications of one drill in one process share one check of each repository
(:class:`DrillChecks`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agents.config.model import AgentConfig
from agents.contract.jobs import CheckJob
from agents.contract.records import CheckResult, Coverage, RepositoryRef, ResticInfo, SignedRecord
from agents.inthread import InThread
from agents.records import CheckDraft, RecordDraft, job_record
from agents.repositories import open_outbox, open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir, write_atomically


@dataclass(frozen=True)
class CheckOutcome:
    result: CheckResult
    error: str | None  # why the check could not run; None when it ran (and found what ``result`` says)


def next_check_part(state: StateDir, repository: str, parts: int) -> int:
    """The rotating cursor of ``--read-data-subset``: part 1..parts, one further at each check."""
    path = os.path.join(state.sub("verify"), f"{repository}.cursor")
    try:
        with open(path, encoding="utf-8") as handle:
            last = int(handle.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        last = 0
    part = last % parts + 1
    write_atomically(path, str(part).encode())
    return part


def run_check_part(restic: Restic, state: StateDir, repository: str, parts: int,
                   part: int | None = None) -> CheckOutcome:
    """Run ``restic check`` reading ``part`` of ``parts`` of the data (default: the next, by this agent's cursor).

    The check is its job's first contact with the repository: an unreachable one fails within its
    ``connect_timeout``.
    """
    part = part if part is not None else next_check_part(state, repository, parts)
    coverage = Coverage(parts_read_this_cycle=part, parts=parts, fraction=round(part / parts, 4))
    subset = f"{part}/{parts}"
    started = time.monotonic()
    try:
        ok, problems = restic.check(subset, first_contact=True)
    except ResticError as error:
        return CheckOutcome(CheckResult(read_data_subset=subset, coverage=coverage),
                            f"restic check could not run: {error.describe()}")
    return CheckOutcome(CheckResult(read_data_subset=subset, passed=ok, problems=list(problems), coverage=coverage,
                                    seconds=round(time.monotonic() - started, 3)), None)


class BackgroundCheck:
    """:func:`run_check_part` in a thread, started at once, timed as the ``check`` phase of ``timed``;
    :meth:`outcome` waits for it.

    A verification lists the snapshots, restores a files snapshot or reads a dump's manifest (each ``--no-lock``)
    and starts its throwaway database instance (seconds) while restic checks: the check holds the repository's
    exclusive lock (any other locking restic command would fail as locked until it ends), and nothing read beside
    it is used before its outcome is known (:mod:`agents.jobs.beside_check`).
    """

    def __init__(self, restic: Restic, state: StateDir, repository: str, parts: int,
                 timed: RecordDraft[Any]) -> None:
        self._args = (restic, state, repository, parts)
        self._timed = timed
        self.ended: float | None = None  # time.monotonic() when the check ended
        self._checking = InThread(self._run, "restic-check")

    def _run(self) -> CheckOutcome:
        try:
            with self._timed.phase("check"):
                return run_check_part(*self._args)
        finally:
            self.ended = time.monotonic()

    @property
    def done(self) -> bool:
        return not self._checking.running

    def wait(self) -> None:
        """Until the check has ended, whatever its outcome."""
        self._checking.wait()

    def outcome(self) -> CheckOutcome:
        """The check's outcome, once it has ended. Raises what the check raised (not a ``ResticError``: that is
        an outcome with an ``error``)."""
        return self._checking.result()


class DrillChecks:
    """One ``restic check`` of a repository for the verifications of one drill that run in this process close
    together.

    ``restic check`` holds the repository's exclusive lock; verifications of one drill running side by side
    (``drillctl drill run --parallel``) would each wait for the others' restores before their own check. The first
    verification of a drill checks the repository (reading its next part of the data, timed in its record); a
    verification of the same drill that starts while that check runs, or within :attr:`SHARE_SECONDS` after it
    passed or found damage, waits for it and carries its result, with a ``check_shared`` finding naming the job that
    ran it -- so those verifications read one part of the data between them, not one each. A check that could not
    run (interrupted, locked, unreachable) is never shared, nor an older one; a verification outside a drill always
    runs its own.
    """

    SHARE_SECONDS = 600.0
    KEPT = 64  # drills remembered

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: OrderedDict[tuple[str, str, int], tuple[BackgroundCheck, str]] = OrderedDict()

    def start_or_join(self, restic: Restic, state: StateDir, repository: str, parts: int, drill_id: str | None,
                      timed: RecordDraft[Any]) -> tuple[BackgroundCheck, str | None]:
        """The check this verification relies on, and the id of the job that ran it when another one did (None:
        this verification runs it, timed in ``timed``)."""
        if drill_id is None:
            return BackgroundCheck(restic, state, repository, parts, timed), None
        key = self._key(restic, drill_id, parts)
        with self._lock:
            found = self._checks.get(key)
            if found is not None and self._shareable(found[0]):
                return found
            check = BackgroundCheck(restic, state, repository, parts, timed)
            self._checks[key] = (check, timed.request or timed.job_id)
            self._checks.move_to_end(key)
            while len(self._checks) > self.KEPT:
                self._checks.popitem(last=False)
            return check, None

    @staticmethod
    def _key(restic: Restic, drill_id: str, parts: int) -> tuple[str, str, int]:
        """Checks are shared by repository (its URL: two names for one repository are one), drill and parts."""
        return restic.repository.url, drill_id, parts

    def _shareable(self, check: BackgroundCheck) -> bool:
        ended = check.ended
        if ended is None:
            return True  # running: joining it costs no more than waiting for its lock
        if time.monotonic() - ended > self.SHARE_SECONDS:
            return False
        try:
            return check.outcome().error is None
        except Exception:  # the check itself raised: its own verification reports it
            return False


DRILL_CHECKS = DrillChecks()


def run_check(config: AgentConfig, job: CheckJob) -> list[SignedRecord]:
    """Check ``job.repository``; one record: passed, failed (damage found) or error (the check could not run)."""
    state = StateDir(config.state_dir)
    repository = RepositoryRef(name=job.repository, site=config.sites[job.repository])
    placeholder = CheckResult(read_data_subset=f"0/{job.read_data_parts}",
                              coverage=Coverage(parts_read_this_cycle=0, parts=job.read_data_parts, fraction=0))
    draft = RecordDraft(config.host, CheckDraft(repository=repository, check=placeholder, verdict="error"),
                        request=job.id)
    with job_record(open_outbox(config), draft):
        try:
            restic = open_repository(config, job.repository)
        except ResticError as error:
            draft.add("could_not_verify", "error", error.describe())
        else:
            draft.details.restic = ResticInfo(version=str(restic.version))
            with draft.phase("check"):
                outcome = run_check_part(restic, state, job.repository, job.read_data_parts, job.read_data_part)
            draft.details.check = outcome.result
            if outcome.error is not None:
                draft.add("could_not_verify", "error", outcome.error)
            for problem in outcome.result.problems:
                draft.add("repository_damaged", "error", problem)
            draft.details.verdict = "error" if outcome.error else ("passed" if outcome.result.passed else "failed")
            draft.outcome = "success" if draft.details.verdict == "passed" else "failed"
    return [draft.written()]
