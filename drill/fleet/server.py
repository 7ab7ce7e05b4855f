"""The coordinator's fleet service without HTTP: who is asking, enrolment, polls, records.

Each handler takes what arrived (headers, body, the peer's address), does its
work in one borrowed database connection and returns ``(status, answer)``. A
request is refused with a :class:`Refusal` (a stable code and a message): an
unsigned, stale, replayed or badly signed request (401), an unknown or revoked
agent (401/403), a malformed body (400).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agents.contract import httpsig, signing
from agents.contract.documents import Document, DocumentError, to_json_document, validate
from agents.contract.fleet import (
    EnrolAnswer,
    EnrolRequest,
    PollAnswer,
    PollRequest,
    RecordResult,
    RecordsAnswer,
    RecordsPush,
)
from agents.contract.records import AgentRecord, RefusedRecord
from drill.config import DrillConfig, FleetSettings
from drill.fleet import enrolment, queue
from drill.fleet.pool import Connection, Pool
from drill.ledger.entries import Entry
from drill.ledger.ledger import AlreadyPresent, Refused

log = logging.getLogger(__name__)

MAX_BODY = 32 << 20
Answer = tuple[int, dict[str, Any]]
M = TypeVar("M", bound=Document)


class Rejected(Exception):
    """A request refused: HTTP ``status``, a stable ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def answer(self) -> Answer:
        return self.status, {"error": self.code, "message": str(self)}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected(400, "malformed_body", "the body is not JSON") from None


def _document(model: type[M], body: bytes, what: str) -> M:
    """The body as ``model``. Raises :class:`Rejected` (400 ``malformed_body``) naming what is wrong."""
    try:
        return validate(model, _json(body), what)
    except DocumentError as error:
        raise Rejected(400, "malformed_body", str(error)) from None


class FleetServer:
    """The service of ``config`` (which must have ``listen``): its key, its connections, its handlers."""

    def __init__(self, config: DrillConfig, *, clock: Callable[[], float] = time.time) -> None:
        if config.fleet is None:
            raise ValueError("the config does not serve a fleet (no listen:)")
        self.config = config
        self.settings: FleetSettings = config.fleet
        self.clock = clock
        self.key, _ = signing.ensure_key(os.path.join(config.state_dir, "keys"), config.digest)
        self.pool = Pool(config.ledger_url, self.settings.connections, self.key, config.coordinator,
                         config.checkpoint_log)

    def close(self) -> None:
        self.pool.close()

    # -- who is asking ------------------------------------------------------------------
    def _authenticate(self, db: Connection, headers: dict[str, str], body: bytes, path: str,
                      address: str | None) -> enrolment.AgentRow:
        try:
            request = httpsig.parse_request_signature(headers, body)
        except httpsig.RequestRefused as refused:
            raise Rejected(401, refused.code, str(refused)) from None
        try:
            agent = enrolment.get_agent(db.store, request.keyid)
        except enrolment.UnknownAgent:
            raise Rejected(401, "unknown_agent", f"no enrolled agent has the key {request.keyid}") from None
        if agent.status == "revoked":
            raise Rejected(403, "agent_revoked", f"agent {agent.host} was revoked; it must be enrolled anew")
        now = self.clock()
        try:
            httpsig.verify_request(request, signing.load_public_pem(agent.public_pem), "POST", path, now=now)
        except httpsig.RequestRefused as refused:
            raise Rejected(401, refused.code, str(refused)) from None
        if not enrolment.remember_nonce(db.store, agent.agent_id, request.nonce, now, httpsig.WINDOW_SECONDS):
            raise Rejected(401, "replayed_request", "this request was received before: a replay")
        enrolment.seen(db.store, agent.agent_id, address, now)
        return agent

    # -- enrolment -------------------------------------------------------------------------
    def enrol(self, headers: dict[str, str], body: bytes, address: str | None) -> Answer:
        try:
            request = validate(EnrolRequest, _json(body), "enrolment")
            signed = httpsig.parse_request_signature(headers, body)
            public = signing.load_public_pem(request.public_key)
            httpsig.verify_request(signed, public, "POST", "/v1/enrol", now=self.clock())
        except Rejected as rejected:
            return rejected.answer()
        except DocumentError as error:
            return Rejected(400, "malformed_body", str(error)).answer()
        except signing.SignatureError as error:
            return Rejected(400, "bad_key", str(error)).answer()
        except httpsig.RequestRefused as refused:
            return Rejected(401, refused.code, f"the enrolment is not signed by the key it enrols: {refused}").answer()
        with self.pool.borrow() as db:
            try:
                row = enrolment.enrol(db.store, request.token, enrolment.Enrolment(
                    request.public_key, request.host, request.role, request.site, request.inventory,
                    request.version, request.capacity), digest=self.config.digest, approval=self.settings.approval,
                    now=self.clock())
            except enrolment.EnrolmentRefused as refused:
                return Rejected(403, refused.code, str(refused)).answer()
            if row.status == "approved":
                db.ledger.add_key(row.public_pem, row.host, row.role)
            enrolment.seen(db.store, row.agent_id, address, self.clock())
        log.info("enrolled %s (%s at %s) as %s, %s", row.host, row.role, row.site, row.agent_id, row.status)
        return 200, to_json_document(EnrolAnswer(
            agent_id=row.agent_id, status="approved" if row.status == "approved" else "pending",
            coordinator=self.config.coordinator, job_key=signing.public_pem(self.key.public),
            poll_seconds=self.settings.poll_seconds))

    # -- polls --------------------------------------------------------------------------------
    def poll(self, headers: dict[str, str], body: bytes, address: str | None) -> Answer:
        with self.pool.borrow() as db:
            try:
                agent = self._authenticate(db, headers, body, "/v1/poll", address)
                request = _document(PollRequest, body, "poll")
            except Rejected as rejected:
                return rejected.answer()
            now = self.clock()
            queue.renew(db.store, agent.agent_id, list(request.running), now=now, lease=self.settings.lease)
            if request.inventory is not None:
                enrolment.update_inventory(db.store, agent.agent_id, request.inventory)
                agent = enrolment.get_agent(db.store, agent.agent_id)
            jobs = []
            if agent.status == "approved" and request.free > 0:
                jobs = queue.claim(db.store, agent, self.key, now=now, lease=self.settings.lease,
                                   coordinator=self.config.coordinator, limit=request.free)
        return 200, to_json_document(PollAnswer(status="approved" if agent.status == "approved" else "pending",
                                                jobs=jobs, poll_seconds=self.settings.poll_seconds))

    # -- records ------------------------------------------------------------------------------
    def records(self, headers: dict[str, str], body: bytes, address: str | None) -> Answer:
        with self.pool.borrow() as db:
            try:
                agent = self._authenticate(db, headers, body, "/v1/records", address)
                push = _document(RecordsPush, body, "records")
            except Rejected as rejected:
                return rejected.answer()
            if agent.status != "approved":
                return Rejected(403, "agent_pending", f"agent {agent.host} awaits approval "
                                "(drillctl agents approve); its records wait in its outbox").answer()
            public = signing.load_public_pem(agent.public_pem)
            keys = {signing.key_id(public, digest): public for digest in signing.DIGESTS}
            taken = db.ledger.append_many(push.records, keys)
            results = [self._result(db, agent, outcome) for outcome in taken]
        return 200, to_json_document(RecordsAnswer(results=results))

    def _result(self, db: Connection, agent: enrolment.AgentRow, outcome: Entry | Refused | AlreadyPresent,
                ) -> RecordResult:
        """What the agent is told of one of its records; a job the record answers is finished."""
        if isinstance(outcome, Refused):
            code = "not_your_record" if outcome.code == "unknown_key" else outcome.code
            return RecordResult(status="refused", code=code, message=str(outcome))
        status = "taken"
        if isinstance(outcome, AlreadyPresent):
            found = db.ledger.entry_at(outcome.index)
            if found is None:
                return RecordResult(status="refused", code="ledger_inconsistent", message=str(outcome))
            outcome, status = found, "already"
        record = outcome.record
        if isinstance(record, AgentRecord) and record.job.request:
            queue.finish(db.store, record.job.request, agent.agent_id, _outcome(record), now=self.clock())
        return RecordResult(record_id=outcome.record_id, status=status)


def _outcome(record: Any) -> str:
    """What a job ended in, from its record: ``refused``, a verification's verdict, or a backup's outcome."""
    if isinstance(record, RefusedRecord):
        return "refused"
    return str(getattr(record, "verdict", None) or getattr(record, "outcome", None) or "done")

