"""Result records: the contract between agents and the coordinator.

Every job ends in exactly one record (schema ``drill.result/v1``), written
atomically to the outbox in ``state_dir``. A failed or partial job says so in
``outcome``; only a job with nothing wrong is ``success``. A record is written
even when the job raises: :func:`job_record` is a context manager that turns an
escaping exception into a failed record and re-raises nothing but that
exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from agents import signing

RECORD_SCHEMA = "drill.result/v1"

OUTCOMES = ("success", "partial", "failed")
SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One typed observation of a job; ``error`` findings make a job fail or partial."""

    code: str
    severity: str
    message: str
    subject: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ResultRecord:
    """A job's result, filled in while the job runs."""

    job_kind: str
    host: str
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    agent: str = field(default_factory=socket.gethostname)
    outcome: str = "failed"
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    started: datetime = field(default_factory=utc_now)
    finished: datetime | None = None
    phases: dict[str, float] = field(default_factory=dict)
    path: str | None = None  # where the outbox put it

    def add(self, code: str, severity: str, message: str, subject: str | None = None) -> Finding:
        finding = Finding(code, severity, message, subject)
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
            self.phases[name] = round(self.phases.get(name, 0.0) + time.monotonic() - started, 3)

    def to_document(self) -> dict[str, Any]:
        finished = self.finished or utc_now()
        return {
            "schema": RECORD_SCHEMA,
            "record_id": self.record_id,
            "job": {"id": self.job_id, "kind": self.job_kind},
            "host": self.host,
            "agent": self.agent,
            **self.details,
            "timings": {
                "started": iso(self.started),
                "finished": iso(finished),
                "duration_seconds": round((finished - self.started).total_seconds(), 3),
                "phases": dict(self.phases),
            },
            "outcome": self.outcome,
            "findings": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.findings],
        }


class AgentConfigLike(Protocol):
    @property
    def state_dir(self) -> str: ...

    @property
    def evidence_digest(self) -> str: ...


class Outbox:
    """The directory of signed records waiting for the coordinator, one DSSE envelope per file.

    Records are signed with the agent's key (``state_dir/keys/``, created on first
    use if ``drill-agent init`` has not made it). Records the coordinator has taken
    move to ``outbox/sent/``; both places are searched for a job's record.
    """

    @classmethod
    def of(cls, config: AgentConfigLike) -> Outbox:
        """The outbox of an agent config, signing with its configured digest."""
        return cls(config.state_dir, config.evidence_digest)

    def __init__(self, state_dir: str, digest: str = signing.DEFAULT_DIGEST) -> None:
        self.path = os.path.join(state_dir, "outbox")
        self.sent_path = os.path.join(self.path, "sent")
        self.keys_dir = os.path.join(state_dir, "keys")
        self.digest = digest

    @property
    def key(self) -> signing.SigningKey:
        return signing.ensure_key(self.keys_dir, self.digest)[0]

    def write(self, record: ResultRecord) -> str:
        """Sign ``record`` and write it atomically (temp file, fsync, rename); return its path."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        document = record.to_document()
        envelope = self.key.sign_document(document)
        stamp = document["timings"]["finished"].replace(":", "").replace("-", "")
        final = os.path.join(self.path, f"{stamp}-{record.job_kind}-{record.job_id}.json")
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=".incoming-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(envelope, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return final

    def list(self, *, sent: bool = False) -> list[str]:
        """Paths of the records waiting (or, with ``sent``, already taken), oldest first."""
        folder = self.sent_path if sent else self.path
        if not os.path.isdir(folder):
            return []
        return sorted(
            os.path.join(folder, name)
            for name in os.listdir(folder)
            if name.endswith(".json") and not name.startswith(".")
        )

    @staticmethod
    def read_envelope(path: str) -> Any:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    @staticmethod
    def read(path: str) -> dict[str, Any]:
        """The record in the envelope at ``path``, not checking the signature (for display)."""
        document = signing.envelope_payload(Outbox.read_envelope(path))
        if not isinstance(document, dict):
            raise signing.SignatureError(f"{path} does not hold a record")
        return document

    def read_verified(self, path: str) -> dict[str, Any]:
        """The record at ``path``, checked against this agent's own key. Raises :class:`signing.SignatureError`."""
        key = self.key
        opened = signing.open_envelope(self.read_envelope(path), {key.keyid: key.public})
        document = opened.document()
        if not isinstance(document, dict):
            raise signing.SignatureError(f"{path} does not hold a record")
        return document

    def find_job(self, job_id: str) -> str | None:
        """The record file of job ``job_id``, waiting or sent."""
        for path in (*self.list(), *self.list(sent=True)):
            if os.path.basename(path).endswith(f"-{job_id}.json"):
                return path
        return None

    def mark_sent(self, path: str) -> None:
        """Move a record the coordinator has taken out of the waiting list."""
        os.makedirs(self.sent_path, mode=0o700, exist_ok=True)
        os.replace(path, os.path.join(self.sent_path, os.path.basename(path)))


def decide_outcome(record: ResultRecord, *, complete: bool) -> str:
    """``success`` only when the job completed and has no error finding.

    A job that completed its main work but has error findings (unreadable files,
    a failed replica) is ``partial``; one that did not complete is ``failed``.
    """
    if not complete:
        return "failed"
    return "partial" if record.has_errors else "success"


@contextlib.contextmanager
def job_record(outbox: Outbox, record: ResultRecord) -> Iterator[ResultRecord]:
    """Run a job's body and always write its record.

    The body sets ``record.outcome``; if it raises, the record is written as
    failed with an ``internal_error`` (or ``interrupted``) finding and the
    original exception propagates. If writing the record itself fails, the
    job's own error still wins.
    """
    try:
        yield record
    except BaseException as error:
        record.outcome = "failed"
        code = "interrupted" if isinstance(error, KeyboardInterrupt) else "internal_error"
        record.add(code, "error", f"{type(error).__name__}: {error}")
        record.finished = utc_now()
        with contextlib.suppress(Exception):
            record.path = outbox.write(record)
        raise
    record.finished = utc_now()
    record.path = outbox.write(record)
