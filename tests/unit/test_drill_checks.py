"""Which verifications of a drill share one restic check of a repository (``agents.jobs.check.DrillChecks``).

restic is replaced by a stand-in whose ``check`` passes, waits to be released, or fails to run: the faults a real
restic cannot be made to produce on demand (a check that could not run, one still running).
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from agents.jobs.check import DrillChecks
from agents.restic.exitcodes import ResticOutcome
from agents.restic.runner import ResticError
from agents.state import StateDir


class StandInRestic:
    """``check`` passes (after ``release`` when ``hold``), or raises as a locked repository does."""

    def __init__(self, *, fails: bool = False, hold: bool = False) -> None:
        self.repository = SimpleNamespace(url="/srv/repo")
        self.fails = fails
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.checks = 0

    def check(self, subset: str, *, first_contact: bool = False) -> tuple[bool, tuple[str, ...]]:
        assert first_contact  # a verification's first command
        self.checks += 1
        self.release.wait(10)
        if self.fails:
            raise ResticError(ResticOutcome.LOCKED, "restic check failed on repository 'local' (exit 11: locked)")
        return True, ()


class Timed:
    def __init__(self, request: str) -> None:
        self.request, self.job_id = request, f"record-of-{request}"

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield


def _start(checks: DrillChecks, restic: Any, state: StateDir, drill: str | None, request: str) -> Any:
    return checks.start_or_join(restic, state, "local", 30, drill, timed=Timed(request))  # type: ignore[arg-type]


def test_verifications_of_one_drill_join_a_running_or_recent_check(tmp_path: pathlib.Path) -> None:
    checks, state, restic = DrillChecks(), StateDir(str(tmp_path)), StandInRestic(hold=True)
    first, ran_by = _start(checks, restic, state, "drill-1", "job-a")
    assert ran_by is None
    joined, ran_by = _start(checks, restic, state, "drill-1", "job-b")  # still running
    assert joined is first and ran_by == "job-a"
    restic.release.set()
    assert first.outcome().result.passed is True
    assert _start(checks, restic, state, "drill-1", "job-c")[1] == "job-a"  # ended moments ago, passed
    assert restic.checks == 1
    other_drill, ran_by = _start(checks, restic, state, "drill-2", "job-d")
    assert other_drill is not first and ran_by is None
    other_drill.outcome()
    assert restic.checks == 2


def test_no_sharing_outside_a_drill_after_a_check_that_could_not_run_or_long_after(tmp_path: pathlib.Path) -> None:
    checks, state = DrillChecks(), StateDir(str(tmp_path))
    restic = StandInRestic()
    alone = [_start(checks, restic, state, None, name)[0] for name in ("job-a", "job-b")]
    assert alone[0] is not alone[1]
    for check in alone:
        check.outcome()

    failing = StandInRestic(fails=True)
    failed, _ = _start(checks, failing, state, "drill-1", "job-c")
    assert failed.outcome().error is not None
    again, ran_by = _start(checks, failing, state, "drill-1", "job-d")
    assert again is not failed and ran_by is None  # the check that could not run is run again
    again.outcome()

    passed, _ = _start(checks, restic, state, "drill-2", "job-e")
    passed.outcome()
    passed.ended -= DrillChecks.SHARE_SECONDS + 1  # as if it had ended long ago
    later, ran_by = _start(checks, restic, state, "drill-2", "job-f")
    assert later is not passed and ran_by is None
    later.outcome()
