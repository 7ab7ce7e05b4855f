"""The agent's side of ``drill-agent run`` in a fleet: deliver records, poll for jobs, run them.

Each round: push the outbox's records (oldest first, in batches; each one the
coordinator took, or already had, stops waiting; one it refused is set aside
with the reason), then poll -- the heartbeat, the running jobs whose leases to
renew, and the jobs to start, up to ``fleet.capacity`` at once in threads. A
job is checked (:func:`agents.fleet.accept.open_job`) before it runs; a refusal
is a signed record like any result. When the coordinator cannot be reached the
agent goes on alone (backups on schedule, records kept in the outbox) and tries
again with a growing backoff: nothing is lost however long the outage, and the
records go in order once it is over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from agents import process
from agents.api import LocalAgent
from agents.config.model import AgentConfig
from agents.contract import signing
from agents.contract.documents import DocumentError, validate
from agents.contract.fleet import MAX_RECORDS_PER_PUSH, PollAnswer, RecordsAnswer
from agents.execute import execute, refuse_by_id
from agents.fleet.accept import JobRefused, open_job
from agents.fleet.link import LinkError
from agents.fleet.membership import Membership, fleet_inventory, link_of
from agents.state import PolicyBusy

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
STOP_CHECK_SECONDS = 0.5  # how soon a wait notices ``stop`` while it also listens for a job's end
BATCH = min(100, MAX_RECORDS_PER_PUSH)


class Worker:
    """The fleet side of one agent: ``config`` enrolled as ``membership``."""

    def __init__(self, config: AgentConfig, membership: Membership) -> None:
        self.config = config
        self.agent = LocalAgent(config)
        self.link = link_of(config, membership)
        self.job_key = signing.load_public_pem(membership.job_key)
        self.nonces = os.path.join(config.state_dir, "fleet", "nonces")
        self.poll_seconds = membership.poll_seconds
        self.capacity = config.fleet.capacity
        self.executor = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="job")
        self.running: dict[str, Future[None]] = {}
        self.inventory_sent = False
        self.failures = 0
        self.lock = threading.Lock()
        # Set when a job ends: its record goes out and the freed slot asks for the next job at once, instead of
        # after the rest of the poll interval -- in a drill, every interval waited is added to the RTO.
        self.wake = threading.Event()

    # -- records ---------------------------------------------------------------------------
    def deliver(self) -> int:
        """Push every waiting record, oldest first; how many the coordinator now has. Raises ``LinkError``."""
        delivered = 0
        while True:
            with self.lock:  # job threads add records meanwhile; one pusher at a time keeps the order
                waiting = self.agent.waiting(limit=BATCH)  # a long backlog is read a batch at a time
                if not waiting:
                    return delivered
                raw = self.link.post("/v1/records", {"records": [w.envelope for w in waiting]})
                try:
                    answer = validate(RecordsAnswer, raw, "the coordinator's answer")
                except DocumentError as error:
                    raise LinkError("bad_answer", str(error)) from None
                if len(answer.results) != len(waiting):
                    raise LinkError("bad_answer", "the coordinator answered for another number of records")
                for record, result in zip(waiting, answer.results, strict=True):
                    if result.status in ("taken", "already"):
                        self.agent.delivered(record)
                        delivered += 1
                    else:
                        log.error("the coordinator refused %s: %s: %s", record.path, result.code, result.message)
                        self.agent.refused(record, f"{result.code}: {result.message}")

    # -- jobs ------------------------------------------------------------------------------
    def poll(self) -> int:
        """Heartbeat and take new jobs; how many started. Raises ``LinkError``."""
        with self.lock:
            self.running = {job_id: f for job_id, f in self.running.items() if not f.done()}
            running = list(self.running)
        body: dict[str, Any] = {"running": running, "free": max(0, self.capacity - len(running))}
        if not self.inventory_sent:
            body["inventory"] = fleet_inventory(self.config, self.agent.inventory).model_dump(mode="json",
                                                                                               by_alias=True)
        raw = self.link.post("/v1/poll", body)
        try:
            answer = validate(PollAnswer, raw, "the coordinator's answer")
        except DocumentError as error:
            raise LinkError("bad_answer", str(error)) from None
        self.inventory_sent = True
        self.poll_seconds = answer.poll_seconds
        for envelope in answer.jobs:
            self._start(envelope)
        return len(answer.jobs)

    def _start(self, envelope: dict[str, Any]) -> None:
        try:
            job = open_job(envelope, self.job_key, self.nonces, self.config.accepted_kinds)
        except JobRefused as refused:
            payload = _payload(envelope)
            job_id = refused.job_id or str(payload.get("id") or "unreadable")[:128]
            log.warning("refused job %s: %s: %s", job_id, refused.code, refused)
            refuse_by_id(self.config, job_id, str(payload.get("kind") or "unknown")[:64], refused.code, str(refused),
                         drill_id=payload.get("drill_id") if isinstance(payload.get("drill_id"), str) else None)
            return
        log.info("job %s: %s started", job.id, job.kind)
        with self.lock:
            self.running[job.id] = self.executor.submit(self._run, job)

    def _run(self, job: Any) -> None:
        try:
            records = execute(self.config, job)
            log.info("job %s: %s ended in %d record(s)", job.id, job.kind, len(records))
        except PolicyBusy as busy:
            refuse_by_id(self.config, job.id, job.kind, "policy_busy", str(busy))
        except Exception:  # a job that crashed still answers: the coordinator must not wait for its lease
            log.exception("job %s crashed", job.id)
            refuse_by_id(self.config, job.id, job.kind, "job_crashed", "the job stopped with an internal error "
                         "(the agent's log has it)")
        finally:
            self.wake.set()

    # -- the loop --------------------------------------------------------------------------
    def round(self) -> None:
        """One round: deliver, poll, deliver (no new jobs once the agent is stopping). Raises ``LinkError``."""
        self.deliver()
        if process.CANCELLATION.is_cancelled:
            return
        self.poll()
        self.deliver()

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` or a cancellation, waiting ``poll_seconds`` (±20%) between them, longer after
        failures; a job that ends starts the next round at once (unless the coordinator is unreachable)."""
        while not stop.is_set() and not process.CANCELLATION.is_cancelled:
            try:
                self.round()
                self.failures = 0
                wait = self.poll_seconds * random.uniform(0.8, 1.2)  # noqa: S311 -- jitter, not secrecy
            except LinkError as error:
                self.failures += 1
                wait = min(MAX_BACKOFF, self.poll_seconds * 2 ** min(self.failures, 10))
                log.warning("coordinator: %s; working alone, trying again in %.0fs", error, wait)
            self._sleep(stop, wait)
        self.executor.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(LinkError):
            self.deliver()  # what the last jobs ended in, if the coordinator is there


    def _sleep(self, stop: threading.Event, seconds: float) -> None:
        """Wait ``seconds``, or less: until ``stop``, or until a job ends while the coordinator answers."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if self.failures == 0 and self.wake.wait(min(remaining, STOP_CHECK_SECONDS)):
                self.wake.clear()
                return
            if self.failures:
                stop.wait(min(remaining, STOP_CHECK_SECONDS))


def _payload(envelope: Any) -> dict[str, Any]:
    try:
        payload = signing.envelope_payload(envelope)
    except (signing.SignatureError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}
