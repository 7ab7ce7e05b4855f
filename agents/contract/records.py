"""``drill.result/v1``: the records jobs and drills end in, as typed documents.

Every record has the same head: ``schema``, ``record_id``, ``job`` (``id``,
``kind``, and ``request``: the ``drill.job/v1`` it answers), ``host`` and, for a
drill's records, ``drill_id``. What follows depends on ``job.kind``:

=================  ===========  ==================================================
kind               signed by    says
=================  ===========  ==================================================
``backup``         agent        one target (or one database) backed up at a level
``verify``         agent        one backup restored into scratch and compared
``check``          agent        ``restic check`` of one repository
``refused``        agent        a job the agent would not run, and why
``drill.started``  coordinator  a drill's site and scope
``drill.step``     coordinator  one system and target of a drill: RPO, RTO, verdict
``drill.finished`` coordinator  the drill's verdict and every record it consists of
=================  ===========  ==================================================

An agent's record also has ``agent`` (the machine), ``timings``, ``outcome``
(``success`` only when nothing went wrong) and ``findings``.

:func:`parse_record` reads any of them (and the drill records written before
they shared this head, ``drill.drill/v1``) into its type; ``docs/schemas/``
holds the JSON Schema generated from these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, TypeAdapter, model_validator

from agents.contract import signing
from agents.contract.documents import Document, DocumentError, Fields, Seconds, Timestamp, validate
from policies.levels import Level

RECORD_SCHEMA = "drill.result/v1"
LEGACY_DRILL_SCHEMA = "drill.drill/v1"  # drill records before they shared the head of every record

Outcome = Literal["success", "partial", "failed"]
Severity = Literal["info", "warning", "error"]
Verdict = Literal["passed", "failed", "error"]  # error: the verification could not run -- never a pass

Name = Annotated[str, Field(min_length=1, max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]
Count = Annotated[int, Field(ge=0)]


class Finding(Document):
    """One typed observation of a job; ``error`` findings make a job fail (or be partial)."""

    code: Identifier
    severity: Severity
    message: Annotated[str, Field(max_length=20_000)]
    subject: str | None = None


class JobRef(Document):
    id: Identifier
    kind: Identifier
    request: Identifier | None = None  # the drill.job/v1 this record answers (none: run by the agent itself)


class Timings(Document):
    started: Timestamp
    finished: Timestamp
    duration_seconds: Seconds
    phases: dict[str, Seconds] = Field(default_factory=dict)


class RepositoryRef(Document):
    name: Name
    site: Name


class ResticInfo(Document):
    version: str
    summary: dict[str, Any] | None = None  # restic's own backup summary, as it printed it


# -- the head --------------------------------------------------------------------------

class RecordHead(Document):
    schema_: Literal["drill.result/v1"] = Field(default="drill.result/v1", alias="schema")
    record_id: Identifier
    job: JobRef
    host: Name
    drill_id: Identifier | None = None

    KIND: ClassVar[str] = ""  # the job.kind of this type of record

    @property
    def kind(self) -> str:
        return self.job.kind

    @model_validator(mode="after")
    def _kind_matches(self) -> Self:
        if self.KIND and self.job.kind != self.KIND:
            raise ValueError(f"job.kind is {self.job.kind!r}, but this is a {self.KIND} record")
        return self


class AgentRecord(RecordHead):
    """What every record an agent signs has: who ran it, when, how it ended, what it found."""

    agent: str = ""
    timings: Timings
    outcome: Outcome
    findings: list[Finding] = Field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)


# -- backup ----------------------------------------------------------------------------

class BackupTarget(Document):
    name: Name
    kind: Identifier
    database: str | None = None


class LevelInfo(Document):
    requested: Level
    effective: Level | None = None
    reason: str | None = None


class SnapshotRef(Document):
    id: Identifier
    time: Timestamp
    tree: str | None = None


class FilesManifestInfo(Document):
    """A files backup's manifest: the one file of its own snapshot ``snapshot_id``, at ``path`` (without
    ``snapshot_id``: a backup of an earlier version, whose manifest lives inside the data's snapshot at ``path``)."""

    digest: Identifier
    path: str
    algorithm: Identifier
    files: Count
    bytes: Count
    entries: Count
    hashed_files: Count
    hashed_bytes: Count
    reused_hashes: Count
    unreadable: Count = 0
    size: Count | None = None  # the manifest document's bytes: a verification reads no more
    snapshot_id: Identifier | None = None


class DumpManifestInfo(Document):
    """A dump's manifest: it lives in its own snapshot beside the dump."""

    digest: Identifier
    snapshot_id: Identifier
    schema_digest: str
    dump_digest: Identifier
    dump_bytes: Count
    tables: Count
    rows: Count
    non_transactional: Count = 0
    size: Count | None = None  # the manifest document's bytes: a verification reads no more


class CopiedBackup(Document):
    job_id: Identifier
    source_snapshot_id: Identifier
    copy_snapshot_id: Identifier | None
    tree: str | None
    same_tree: bool


class Replication(Document):
    repository: Name
    site: Name
    copied: list[CopiedBackup] = Field(default_factory=list)
    verified: bool = False


class RetentionResult(Document):
    forgotten: list[Identifier] = Field(default_factory=list)
    kept: Count = 0


class BackupFields(Fields):
    policy: Name
    target: BackupTarget
    repository: RepositoryRef
    level: LevelInfo
    base_snapshot_id: Identifier | None = None
    snapshot: SnapshotRef | None = None
    manifest: FilesManifestInfo | DumpManifestInfo | None = None
    changed_during_backup: list[str] = Field(default_factory=list)
    restic: ResticInfo | None = None
    replication: list[Replication] = Field(default_factory=list)
    retention: dict[str, RetentionResult] = Field(default_factory=dict)


class BackupRecord(AgentRecord, BackupFields):
    KIND: ClassVar[str] = "backup"



# -- verify and check ------------------------------------------------------------------

class ScratchInfo(Document):
    host: Name
    directory: str
    where: str | None = None  # "throwaway instance", "scratch server HOST", or why none was needed
    engine: Identifier | None = None


class VerifiedSnapshot(Document):
    id: Identifier
    time: Timestamp
    job_id: Identifier
    level: Level
    database: str | None = None
    manifest_snapshot_id: Identifier | None = None


class ManifestCheck(Document):
    digest: Identifier
    expected: Identifier
    checked_against: str  # "backup record" (before signed records were required: or "snapshot tag")
    record_id: Identifier | None = None  # the signed backup record that vouched for the manifest


class Compared(Document):
    files: Count = 0
    bytes: Count = 0
    tables: Count | None = None
    rows: Count | None = None


class DumpCheck(Document):
    digest: Identifier
    expected: str
    bytes: Count


class Coverage(Document):
    parts_read_this_cycle: Count
    parts: Annotated[int, Field(ge=1)]
    fraction: Annotated[float, Field(ge=0, le=1)]


class CheckResult(Document):
    """``restic check``, with the part of the data read this time (``--read-data-subset n/N``)."""

    read_data_subset: str
    passed: bool | None = None  # None: the check could not run
    problems: list[str] = Field(default_factory=list)
    coverage: Coverage
    seconds: Seconds | None = None


class VerifyFields(Fields):
    repository: RepositoryRef
    target: Name
    backup_host: Name
    scratch: ScratchInfo
    verdict: Verdict
    snapshot: VerifiedSnapshot | None = None
    manifest: ManifestCheck | None = None
    compared: Compared = Field(default_factory=Compared)
    check: CheckResult | None = None
    restic: ResticInfo | None = None
    database: str | None = None
    dump: DumpCheck | None = None


class VerifyRecord(AgentRecord, VerifyFields):
    KIND: ClassVar[str] = "verify"


class CheckFields(Fields):
    repository: RepositoryRef
    check: CheckResult
    verdict: Verdict
    restic: ResticInfo | None = None


class CheckRecord(AgentRecord, CheckFields):
    KIND: ClassVar[str] = "check"


class RefusedJob(Document):
    id: Identifier
    kind: str


class RefusedFields(Fields):
    refused: RefusedJob


class RefusedRecord(AgentRecord, RefusedFields):
    """A job the agent would not run; its one error finding says why (unknown target, expired, ...)."""

    KIND: ClassVar[str] = "refused"



# -- drills (signed by the coordinator) ----------------------------------------------

class Objectives(Document):
    rto_seconds: Seconds
    rpo_seconds: Seconds


class ScopeItem(Document):
    system: Name
    host: Name | None = None
    targets: list[Name]
    objectives: Objectives


class DrillRecord(RecordHead):
    drill_id: Identifier


class DrillStarted(DrillRecord):
    KIND: ClassVar[str] = "drill.started"

    site: Name
    scope: list[ScopeItem]
    config_file: str | None = None
    started: Timestamp


class StepVerification(Document):
    record_id: Identifier
    leaf_hash: Identifier | None
    database: str | None = None
    snapshot_id: Identifier | None = None
    snapshot_time: Timestamp | None = None
    verdict: Verdict


class StepFinding(Finding):
    from_: Identifier | None = Field(default=None, alias="from")  # the record the finding came from


class StepCompared(Document):
    files: Count = 0
    bytes: Count = 0
    tables: Count = 0
    rows: Count = 0


class DrillStep(DrillRecord):
    KIND: ClassVar[str] = "drill.step"

    system: Name
    backup_host: Name | None = None
    target: Name
    site: Name
    repository: Name | None
    objectives: Objectives
    verifications: list[StepVerification] = Field(default_factory=list)
    snapshot_time: Timestamp | None = None
    rpo_seconds: Seconds | None = None  # None: no snapshot at the site, RPO is infinite
    rto_seconds: Seconds | None = None
    rpo_met: bool
    rto_met: bool
    compared: StepCompared = Field(default_factory=StepCompared)
    findings: list[StepFinding] = Field(default_factory=list)
    verdict: Literal["passed", "failed"]
    started: Timestamp
    finished: Timestamp


class ListedRecord(Document):
    record_id: Identifier
    leaf_hash: Identifier
    kind: Identifier


class DrillFinished(DrillRecord):
    KIND: ClassVar[str] = "drill.finished"

    verdict: Literal["passed", "failed", "incomplete"]
    failing: list[str] = Field(default_factory=list)
    not_run: list[str] = Field(default_factory=list)
    records: list[ListedRecord] = Field(default_factory=list)
    finished: Timestamp
    duration_seconds: Seconds


AgentRecordKind = BackupRecord | VerifyRecord | CheckRecord | RefusedRecord
Record = (BackupRecord | VerifyRecord | CheckRecord | RefusedRecord | DrillStarted | DrillStep | DrillFinished)

# The one registry of record kinds: a kind is listed here or it does not exist.
RECORD_TYPES: dict[str, type[RecordHead]] = {
    "backup": BackupRecord,
    "verify": VerifyRecord,
    "check": CheckRecord,
    "refused": RefusedRecord,
    "drill.started": DrillStarted,
    "drill.step": DrillStep,
    "drill.finished": DrillFinished,
}
AGENT_KINDS = ("backup", "verify", "check", "refused")
DRILL_KINDS = ("drill.started", "drill.step", "drill.finished")


def record_kind(data: Any) -> str:
    """The kind of the record ``data`` (a parsed JSON object), current or legacy. Raises :class:`DocumentError`."""
    if not isinstance(data, dict):
        raise DocumentError("a record must be a JSON object")
    schema = data.get("schema")
    if schema == LEGACY_DRILL_SCHEMA:
        kind = data.get("kind")
    elif schema == RECORD_SCHEMA:
        job = data.get("job")
        kind = job.get("kind") if isinstance(job, dict) else None
    else:
        raise DocumentError(f"record: schema {str(schema)[:80]!r} is not {RECORD_SCHEMA}")
    if not isinstance(kind, str) or kind not in RECORD_TYPES:
        known = ", ".join(RECORD_TYPES)
        raise DocumentError(f"record: job.kind {str(kind)[:80]!r} is not one of {known}")
    return kind


def parse_record(data: Any) -> Record:
    """The typed record in ``data`` (a parsed JSON object). Raises :class:`DocumentError` naming what is wrong."""
    kind = record_kind(data)
    if data.get("schema") == LEGACY_DRILL_SCHEMA:
        # Drill records written as drill.drill/v1 carried "kind" where every record now has "job".
        data = {key: value for key, value in data.items() if key != "kind"}
        data.update(schema=RECORD_SCHEMA, job={"id": data.get("drill_id"), "kind": kind})
    return validate(RECORD_TYPES[kind], data, f"{kind} record")  # type: ignore[return-value]


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``drill.result/v1``: one of the kinds above, told apart by ``job.kind``."""
    adapter: TypeAdapter[Any] = TypeAdapter(Record)
    schema = adapter.json_schema(by_alias=True, mode="serialization")
    schema.update({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "drill.result/v1",
                   "title": "drill.result/v1",
                   "description": "A record a job or a drill ends in. See docs/records-and-jobs.md."})
    return schema


@dataclass(frozen=True)
class SignedRecord:
    """A record as it travels: the signed envelope (the evidence) and the typed record inside it.

    ``path`` is where the agent's outbox keeps it, when it is on this host.
    """

    envelope: dict[str, Any]
    record: Record
    keyid: str
    path: str | None = None

    @classmethod
    def open(cls, envelope: Any, keys: Mapping[str, Ed25519PublicKey], path: str | None = None) -> SignedRecord:
        """Check the signature with ``keys`` and read the record. Raises :class:`SignatureError` or
        :class:`DocumentError`."""
        opened = signing.open_envelope(envelope, keys)
        return cls(envelope, parse_record(opened.document()), opened.keyid, path)

    @classmethod
    def read_unverified(cls, envelope: Any, path: str | None = None) -> SignedRecord:
        """Read the record *without* checking its signature (to show what an outbox holds)."""
        _, _, signatures = signing.parse_envelope(envelope)
        return cls(envelope, parse_record(signing.envelope_payload(envelope)), signatures[0][0], path)
