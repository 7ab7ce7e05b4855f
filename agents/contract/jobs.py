"""``drill.job/v1``: what a coordinator (or the agent's own schedule, or an operator) asks an agent to do.

Three kinds, told apart by ``kind``:

* ``backup``: a policy's targets (or one of them) at a level, or at the level
  the policy's calendar gives for today;
* ``verify``: restore a backup of a target into scratch and compare it with its
  manifest -- a given snapshot, or the newest one with a signed backup record;
* ``check``: ``restic check`` of one repository, reading the next part of its data.

Every job has an ``id`` (the records it ends in name it as ``job.request``),
the time it was ``issued`` and, optionally, when it ``expires``: after that the
agent refuses to start it. Repositories and targets are named as in the agent's
config; secrets never travel in a job. :func:`parse_job` reads one, refusing
wrong types with a named error.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from agents.contract.documents import Document, DocumentError, Timestamp, utc_now, validate
from agents.scratch.config import SCHEMA as SCRATCH_SCHEMA
from policies.levels import Level

__all__ = ["SCRATCH_SCHEMA"]  # the form of a verify job's scratch settings (the agent config's scratch section)

JOB_SCHEMA = "drill.job/v1"
JOB_PAYLOAD_TYPE = "application/vnd.drill.job+json"  # a job a coordinator signs (DSSE payloadType)
LATEST = "latest"  # a verify job's snapshot: the newest backup of the target that a signed record names
MAX_READ_DATA_PARTS = 256  # restic check --read-data-subset n/t allows t up to 256

Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Database = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^,=/\x00]+$")]
SnapshotId = Annotated[str, Field(min_length=4, max_length=64, pattern=r"^[0-9a-f]+$")]


class JobBase(Document):
    schema_: Literal["drill.job/v1"] = Field(default="drill.job/v1", alias="schema")
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=128)
    issued: Timestamp = Field(default_factory=utc_now)
    expires: Timestamp | None = Field(default=None, description="The agent refuses to start the job after this.")
    nonce: str | None = Field(default=None, min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
                              description="Unique per job a coordinator signs: a job seen before is a replay.")
    requested_by: str = Field(default="operator", max_length=256,
                              description="Who asked: 'operator', 'schedule', or the coordinator's name.")


class BackupJob(JobBase):
    """Back up ``policy``'s targets (only ``target`` when given) at ``level`` (None: the calendar's level)."""

    kind: Literal["backup"] = "backup"
    policy: Name
    target: Name | None = None
    level: Level | None = None


class VerifyJob(JobBase):
    """Restore a backup of ``target`` from ``repository`` into scratch and compare it with its manifest."""

    kind: Literal["verify"] = "verify"
    repository: Name
    target: Name
    target_kind: Name | None = Field(default=None, description=(
        "files, postgres or mysql; None: the kind of the agent's own target of that name"))
    snapshot: Literal["latest"] | SnapshotId = Field(default=LATEST, description=(
        "A snapshot id (or a prefix of one), or 'latest': the newest backup (of each database)."))
    database: Database | None = Field(default=None, description="A database target: only this database.")
    backup_host: Name | None = Field(default=None, description="Whose backups; None: the agent's own host.")
    scratch: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"anyOf": [SCRATCH_SCHEMA, {"type": "null"}]},
        description="Scratch settings for this job over the agent's own, in the form of the agent config's scratch "
                    "section.")
    read_data_parts: int = Field(default=30, ge=1, le=MAX_READ_DATA_PARTS, description=(
        "restic check reads 1/N of the data, the next part each time (restic allows N up to 256)."))
    drill_id: str | None = Field(default=None, max_length=128)
    backup_records: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000, description=(
        "Signed backup records (DSSE envelopes, from the ledger) that may vouch for the snapshots to verify, for "
        "an agent that does not hold them itself (a scratch host)."))
    trusted_keys: dict[str, str] = Field(default_factory=dict, max_length=10_000, description=(
        "The public keys (PEM, by key id) the backup records were signed with, as the ledger enrolled them."))


class CheckJob(JobBase):
    """``restic check`` of ``repository``, reading the next 1/``read_data_parts`` of its data."""

    kind: Literal["check"] = "check"
    repository: Name
    read_data_parts: int = Field(default=30, ge=1, le=MAX_READ_DATA_PARTS)
    read_data_part: int | None = Field(default=None, ge=1, le=MAX_READ_DATA_PARTS, description=(
        "Which part to read (1..read_data_parts); None: the next by the agent's own cursor. A coordinator names it, "
        "so that the parts rotate whichever host runs the check."))

    @model_validator(mode="after")
    def _part_within(self) -> CheckJob:
        if self.read_data_part is not None and self.read_data_part > self.read_data_parts:
            raise ValueError(f"read_data_part {self.read_data_part} is beyond read_data_parts {self.read_data_parts}")
        return self


Job = BackupJob | VerifyJob | CheckJob
# The one registry of job kinds: a kind is listed here or it does not exist.
JOB_TYPES: dict[str, type[BackupJob] | type[VerifyJob] | type[CheckJob]] = {
    "backup": BackupJob, "verify": VerifyJob, "check": CheckJob}


def parse_job(data: Any) -> Job:
    """The typed job in ``data`` (a parsed JSON object). Raises :class:`DocumentError` naming what is wrong."""
    if not isinstance(data, dict) or data.get("schema", JOB_SCHEMA) != JOB_SCHEMA:
        raise DocumentError(f"job: not a {JOB_SCHEMA} document")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in JOB_TYPES:
        raise DocumentError(f"job: kind {str(kind)[:80]!r} is not one of {', '.join(JOB_TYPES)}")
    return validate(JOB_TYPES[kind], data, f"{kind} job")


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``drill.job/v1``."""
    adapter: TypeAdapter[Job] = TypeAdapter(Annotated[Job, Field(discriminator="kind")])
    schema = adapter.json_schema(by_alias=True, mode="serialization")
    schema.update({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "drill.job/v1",
                   "title": "drill.job/v1",
                   "description": "What an agent is asked to do. See docs/records-and-jobs.md."})
    return schema
