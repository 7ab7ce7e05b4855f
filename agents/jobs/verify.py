"""The verify job: restore backups into scratch and compare them with the manifests taken at backup time.

Steps, each timed in the record: find the backups → ``restic check`` (structure,
plus a rotating ``--read-data-subset n/N`` so every pack is read within N
verifications) → for each backup, a fresh scratch directory → restore and
compare (files: ``verify_files``; database dumps: ``verify_dump``) → remove the
scratch directory, pass or fail. One record per backup verified; verdict
``passed`` (no failure finding), ``failed`` (findings), or ``error`` (could not
verify -- never a pass).

For a database target, ``--latest`` verifies the newest dump of each of its
databases (and of its global objects).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from agents.config.model import AgentConfig
from agents.jobs import catalog
from agents.jobs.verify_common import CouldNotVerify
from agents.jobs.verify_dump import verify_dump_backup
from agents.jobs.verify_files import verify_files_backup
from agents.records import Outbox, ResultRecord, job_record
from agents.repositories import open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir

DEFAULT_CHECK_PARTS = 30  # every pack read within this many verifications


@dataclass(frozen=True)
class VerifyRequest:
    repository: str
    target: str
    snapshot_id: str | None  # None: the latest backup of the target (of each of its databases)
    host: str
    scratch: str | None
    check_parts: int = DEFAULT_CHECK_PARTS
    database: str | None = None  # a database target: only this database
    drill_id: str | None = None  # set when a DR drill runs this verification


def _next_check_part(state: StateDir, repository: str, parts: int) -> int:
    """The rotating cursor of ``--read-data-subset``: part 1..parts, one further at each verification."""
    path = os.path.join(state.sub("verify"), f"{repository}.cursor")
    try:
        with open(path, encoding="utf-8") as handle:
            last = int(handle.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        last = 0
    part = last % parts + 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(str(part))
    return part


def _new_record(config: AgentConfig, request: VerifyRequest) -> ResultRecord:
    record = ResultRecord("verify", host=config.host)
    scratch = request.scratch or config.scratch.directory or os.path.join(config.state_dir, "scratch")
    record.details = {
        "repository": {"name": request.repository, "site": config.sites.get(request.repository, request.repository)},
        "target": request.target,
        "backup_host": request.host,
        "scratch": {"host": config.host, "directory": scratch},
        "snapshot": None,
        "manifest": None,
        "compared": {"files": 0, "bytes": 0},
        "check": None,
        "verdict": "error",
    }
    if request.drill_id:
        record.details["drill_id"] = request.drill_id
    return record


def _select(backups: list[catalog.StoredBackup], request: VerifyRequest) -> list[catalog.StoredBackup]:
    if request.database is not None:
        backups = [b for b in backups if b.database == request.database]
    if request.snapshot_id is not None:
        wanted = request.snapshot_id
        return [b for b in backups if b.snapshot_id.startswith(wanted)
                or (b.manifest_snapshot_id or "").startswith(wanted)][-1:]
    newest: dict[str | None, catalog.StoredBackup] = {}
    for backup in backups:  # oldest first: the last one of each database wins
        newest[backup.database] = backup
    return sorted(newest.values(), key=lambda b: (b.database is not None, b.database or ""))


def run_verify(config: AgentConfig, request: VerifyRequest) -> list[ResultRecord]:
    """Verify the requested backups; always returns their written records (at least one)."""
    state = StateDir(config.state_dir)
    outbox = Outbox.of(config)
    first = _new_record(config, request)
    with job_record(outbox, first):
        try:
            restic = open_repository(config, request.repository)
            first.details["restic"] = {"version": str(restic.version)}
            backups = _select(catalog.collect_backups(
                restic.snapshots(host=request.host, first_contact=True),
                host=request.host, target=request.target, strict=False), request)
        except ResticError as error:
            first.add("could_not_verify", "error", error.describe())
            first.outcome = "failed"
            return [first]
        if not backups:
            what = f"database {request.database!r} of target" if request.database else "target"
            first.add("no_restorable_snapshot", "error",
                      f"no backup of {what} {request.target!r} from host {request.host!r} in {request.repository!r}"
                      + (f" with snapshot id {request.snapshot_id}" if request.snapshot_id else ""))
            first.outcome = "failed"
            return [first]
        check = _check(restic, state, request, first)
        _verify_one(config, restic, backups[0], check, state, request, first)
    records = [first]
    for backup in backups[1:]:
        record = _new_record(config, request)
        record.details["restic"] = first.details["restic"]
        with job_record(outbox, record):
            _verify_one(config, restic, backup, check, state, request, record)
        records.append(record)
    return records


def _check(restic: Restic, state: StateDir, request: VerifyRequest, record: ResultRecord) -> dict[str, Any]:
    """Run ``restic check`` once for this verification; its result goes into every record."""
    part = _next_check_part(state, request.repository, request.check_parts)
    subset = f"{part}/{request.check_parts}"
    result: dict[str, Any] = {"read_data_subset": subset, "passed": None, "problems": [],
                              "coverage": {"parts_read_this_cycle": part, "parts": request.check_parts,
                                           "fraction": round(part / request.check_parts, 4)}}
    started = time.monotonic()
    with record.phase("check"):  # in the first record's timings; every record carries its result
        try:
            ok, problems = restic.check(subset)
        except ResticError as error:
            result["error"] = f"restic check could not run: {error.describe()}"
            return result
    result.update(passed=ok, problems=list(problems), seconds=round(time.monotonic() - started, 3))
    return result


def _verify_one(
    config: AgentConfig, restic: Restic, backup: catalog.StoredBackup, check: dict[str, Any], state: StateDir,
    request: VerifyRequest, record: ResultRecord,
) -> None:
    record.details["snapshot"] = {"id": backup.snapshot_id, "time": backup.time.isoformat(), "job_id": backup.job_id,
                                  "level": backup.level.value, "database": backup.database,
                                  "manifest_snapshot_id": backup.manifest_snapshot_id}
    record.details["check"] = {k: v for k, v in check.items() if k != "error"}
    verdict = "error"
    try:
        if "error" in check:
            raise CouldNotVerify(check["error"])
        for problem in check["problems"]:
            record.add("repository_damaged", "error", problem)
        if check["passed"]:
            _in_scratch(config, restic, backup, state, request, record)
        verdict = "failed" if record.has_errors else "passed"
    except CouldNotVerify as error:
        record.add("could_not_verify", "error", str(error))
        verdict = "failed" if any(f.code != "could_not_verify" and f.severity == "error"
                                  for f in record.findings) else "error"
    record.details["verdict"] = verdict
    record.outcome = "success" if verdict == "passed" else "failed"


def _in_scratch(
    config: AgentConfig, restic: Restic, backup: catalog.StoredBackup, state: StateDir, request: VerifyRequest,
    record: ResultRecord,
) -> None:
    parent = record.details["scratch"]["directory"]
    try:
        os.makedirs(parent, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="verify-", dir=parent)
    except OSError as error:
        raise CouldNotVerify(f"cannot create a scratch directory in {parent}: {error.strerror}") from error
    try:
        if backup.database is None:
            verify_files_backup(restic, backup, scratch, state, record)
        else:
            # Traverse only (not list): the throwaway instance runs as another account and must pass through.
            os.chmod(scratch, 0o711)  # noqa: S103
            verify_dump_backup(config, restic, backup, scratch, state, record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
