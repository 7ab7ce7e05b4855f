"""What agents and the coordinator say to each other over HTTPS (``drill.fleet/v1``): enrolment, polls, records.

Every request but the health check is signed by the agent's key (:mod:`agents.contract.httpsig`);
enrolment is signed by the key it enrols, which proves the agent holds it. Jobs travel as DSSE
envelopes signed by the coordinator (``application/vnd.drill.job+json``), records as the agent
signed them. No secret crosses: repositories are named, and matched across hosts by restic's
repository id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from agents.contract.documents import Document
from agents.contract.inventory import Inventory

MAX_RECORDS_PER_PUSH = 200
MAX_RUNNING = 64

Text = Annotated[str, Field(min_length=1, max_length=256)]
JobId = Annotated[str, Field(min_length=1, max_length=128)]


class EnrolRequest(Document):
    """``POST /v1/enrol``: a token, the agent's public key and what it is."""

    token: Annotated[str, Field(min_length=8, max_length=256)]
    public_key: Annotated[str, Field(min_length=40, max_length=1024)] = Field(description="Ed25519, PEM")
    host: Text
    role: Literal["agent", "scratch"]
    site: Text
    capacity: Annotated[int, Field(ge=1, le=64)] = 1
    version: Text
    inventory: Inventory


class EnrolAnswer(Document):
    agent_id: Text
    status: Literal["pending", "approved"]
    coordinator: Text
    job_key: Annotated[str, Field(max_length=1024)] = Field(description="The coordinator's public key (PEM) its "
                                                            "jobs are signed with: pinned by the agent")
    poll_seconds: Annotated[float, Field(ge=1, le=3600)]


class PollRequest(Document):
    """``POST /v1/poll``: the agent's heartbeat; the jobs it is running (their leases are renewed)."""

    running: list[JobId] = Field(default_factory=list, max_length=MAX_RUNNING)
    free: Annotated[int, Field(ge=0, le=64)] = 1
    inventory: Inventory | None = None


class PollAnswer(Document):
    status: Literal["pending", "approved"]
    jobs: list[dict[str, Any]] = Field(default_factory=list, description="Signed job envelopes")
    poll_seconds: Annotated[float, Field(ge=1, le=3600)]


class RecordsPush(Document):
    """``POST /v1/records``: signed records from the outbox, oldest first."""

    records: list[dict[str, Any]] = Field(max_length=MAX_RECORDS_PER_PUSH)


class RecordResult(Document):
    record_id: str | None = None
    status: Literal["taken", "already", "refused"]
    code: str | None = None
    message: str | None = None


class RecordsAnswer(Document):
    results: list[RecordResult]


class Refusal(Document):
    """Any 4xx answer: a stable ``error`` code and a message."""

    error: Text
    message: Annotated[str, Field(max_length=4096)]


WIRE_DOCUMENTS: tuple[type[Document], ...] = (EnrolRequest, EnrolAnswer, PollRequest, PollAnswer, RecordsPush,
                                             RecordsAnswer, Refusal)
