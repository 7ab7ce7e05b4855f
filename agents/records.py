"""Building a job's record while it runs, and always writing it.

A job fills a :class:`RecordDraft`: typed details (a draft of its kind's fields,
checked at every assignment), findings, phase timings. :func:`job_record` is a
context manager that writes the record -- signed, to the outbox -- when the job
ends, and also when it raises: the record then says ``failed`` with an
``internal_error`` (or ``interrupted``) finding, and the original exception
propagates. If writing the record itself fails, the job's own error still wins.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Generic, TypeVar

from agents.config.model import AgentConfig
from agents.contract.documents import Draft, utc_now, validate
from agents.contract.records import (
    RECORD_TYPES,
    AgentRecordKind,
    BackupFields,
    BackupRecord,
    BackupTarget,
    CheckFields,
    CheckRecord,
    Finding,
    LevelInfo,
    Outcome,
    RefusedFields,
    RefusedRecord,
    RepositoryRef,
    Severity,
    SignedRecord,
    VerifyFields,
    VerifyRecord,
)
from agents.outbox import Outbox
from policies.config import PolicyConfig
from policies.levels import Level


class BackupDraft(Draft, BackupFields):
    """The fields of a backup record, filled in while the backup runs."""


class VerifyDraft(Draft, VerifyFields):
    """The fields of a verify record, filled in while the verification runs."""


class CheckDraft(Draft, CheckFields):
    """The fields of a check record."""


class RefusedDraft(Draft, RefusedFields):
    """The fields of a refusal."""


D = TypeVar("D", bound=Draft)

_KINDS: dict[type[Draft], str] = {BackupDraft: "backup", VerifyDraft: "verify", CheckDraft: "check",
                                  RefusedDraft: "refused"}


class RecordDraft(Generic[D]):
    """A job's record while the job runs: ``details`` of its kind, findings, timings, outcome (``failed`` until set)."""

    def __init__(self, host: str, details: D, *, request: str | None = None, drill_id: str | None = None) -> None:
        self.kind = _KINDS[type(details)]
        self.host = host
        self.details = details
        self.request = request
        self.drill_id = drill_id
        self.job_id = str(uuid.uuid4())
        self.record_id = str(uuid.uuid4())
        self.agent = socket.gethostname()
        self.outcome: Outcome = "failed"
        self.findings: list[Finding] = []
        self.started: datetime = utc_now()
        self.finished: datetime | None = None
        self.phases: dict[str, float] = {}
        self.signed: SignedRecord | None = None  # once written

    def add(self, code: str, severity: Severity, message: str, subject: str | None = None) -> Finding:
        finding = Finding(code=code, severity=severity, message=message, subject=subject)
        self.findings.append(finding)
        return finding

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the job (``timings.phases.NAME`` in seconds)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add_phase(name, time.monotonic() - started)

    def add_phase(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the phase ``name`` (work timed elsewhere, e.g. in a thread beside the check)."""
        self.phases[name] = round(self.phases.get(name, 0.0) + seconds, 3)

    def written(self) -> SignedRecord:
        """The signed record :func:`job_record` wrote. Raises ``OSError`` when it could not be written."""
        if self.signed is None:
            raise OSError(f"the record of {self.kind} job {self.job_id} could not be written to the outbox")
        return self.signed

    def finish(self) -> AgentRecordKind:
        """The typed record as it stands. Raises :class:`DocumentError` if the draft does not make a valid one."""
        finished = self.finished or utc_now()
        document: dict[str, Any] = {
            "record_id": self.record_id,
            "job": {"id": self.job_id, "kind": self.kind, "request": self.request},
            "host": self.host,
            "agent": self.agent,
            "drill_id": self.drill_id,
            **self.details.model_dump(by_alias=True),
            "timings": {"started": self.started, "finished": finished,
                        "duration_seconds": round((finished - self.started).total_seconds(), 3),
                        "phases": dict(self.phases)},
            "outcome": self.outcome,
            "findings": self.findings,
        }
        record = validate(RECORD_TYPES[self.kind], document, f"{self.kind} record")
        assert isinstance(record, BackupRecord | VerifyRecord | CheckRecord | RefusedRecord)
        return record


def new_backup_draft(config: AgentConfig, policy: PolicyConfig, target: BackupTarget, level: Level,
                     request: str | None) -> RecordDraft[BackupDraft]:
    """The draft of a backup record of ``target`` under ``policy``, at the requested ``level``."""
    repository = config.repositories[policy.repository]
    details = BackupDraft(policy=policy.name, target=target,
                          repository=RepositoryRef(name=repository.name, site=config.sites[repository.name]),
                          level=LevelInfo(requested=level))
    return RecordDraft(config.host, details, request=request)


def decide_outcome(draft: RecordDraft[Any], *, complete: bool) -> Outcome:
    """``success`` only when the job completed and has no error finding.

    A job that completed its main work but has error findings (unreadable files,
    a failed replica) is ``partial``; one that did not complete is ``failed``.
    """
    if not complete:
        return "failed"
    return "partial" if draft.has_errors else "success"


@contextlib.contextmanager
def job_record(outbox: Outbox, draft: RecordDraft[D]) -> Iterator[RecordDraft[D]]:
    """Run a job's body and always write its record (``draft.signed`` afterwards).

    The body sets ``draft.outcome``; if it raises, the record is written as
    failed with an ``internal_error`` (or ``interrupted``) finding and the
    original exception propagates. If writing the record itself fails, the
    job's own error still wins.
    """
    try:
        yield draft
    except BaseException as error:
        draft.outcome = "failed"
        code = "interrupted" if isinstance(error, KeyboardInterrupt) else "internal_error"
        draft.add(code, "error", f"{type(error).__name__}: {error}")
        draft.finished = utc_now()
        with contextlib.suppress(Exception):
            draft.signed = outbox.write(draft.finish())
        raise
    draft.finished = utc_now()
    draft.signed = outbox.write(draft.finish())
