"""Whether to run a job a coordinator sent: its signature, expiry, nonce and kind, before anything else.

Given the envelope, the coordinator's public key pinned at enrolment, the
directory of nonces seen and the kinds this agent runs. Returns the typed job,
or raises :class:`JobRefused` whose ``code`` the agent's signed ``refused``
record carries: ``bad_job_signature`` (not signed by the pinned key, or not a
job), ``invalid_job``, ``job_expired`` (no expiry, past it, or further ahead
than :data:`MAX_LIFETIME`), ``job_replayed`` (its nonce was seen before), and
``kind_not_allowed``. What the agent does not have (target, repository) is
refused afterwards by :func:`agents.execute.execute`, like any other job.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing
from agents.contract.documents import DocumentError, utc_now
from agents.contract.errors import DrillError
from agents.contract.jobs import JOB_PAYLOAD_TYPE, Job, parse_job

MAX_LIFETIME = timedelta(days=2)  # a job valid for longer than this is refused: nonces are kept this long
DEFAULT_KINDS = {"agent": ("backup", "check"), "scratch": ("verify", "check")}


class JobRefused(DrillError):
    def __init__(self, code: str, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id


def open_job(envelope: object, coordinator: Ed25519PublicKey, nonces: str, kinds: tuple[str, ...]) -> Job:
    """The job in ``envelope`` if this agent may run it; the nonce is remembered in the directory ``nonces``.

    Raises :class:`JobRefused`.
    """
    try:
        opened = signing.open_envelope(envelope, {signing.key_id(coordinator): coordinator,
                                                  signing.key_id(coordinator, "sm3"): coordinator})
    except signing.SignatureError as error:
        raise JobRefused("bad_job_signature", f"the job is not signed by the coordinator's key: {error}") from None
    if opened.payload_type != JOB_PAYLOAD_TYPE:
        raise JobRefused("bad_job_signature", f"the envelope holds {opened.payload_type!r}, not a job")
    try:
        job = parse_job(opened.document())
    except (DocumentError, ValueError) as error:
        raise JobRefused("invalid_job", str(error)) from None
    now = utc_now()
    if job.expires is None or job.nonce is None:
        raise JobRefused("job_expired", "a coordinator's job must carry an expiry and a nonce", job.id)
    if job.expires < now:
        raise JobRefused("job_expired", f"the job expired at {job.expires.isoformat()}", job.id)
    if job.expires - now > MAX_LIFETIME:
        raise JobRefused("job_expired", f"the job claims to be valid until {job.expires.isoformat()}, further "
                         f"ahead than an agent accepts ({MAX_LIFETIME.days} days)", job.id)
    if not _first_sight(nonces, job.nonce):
        raise JobRefused("job_replayed", f"job {job.id} with nonce {job.nonce} was received before: a replay", job.id)
    if job.kind not in kinds:
        raise JobRefused("kind_not_allowed", f"this agent runs {', '.join(kinds) or 'no'} jobs, not {job.kind}",
                         job.id)
    return job


def _first_sight(directory: str, nonce: str) -> bool:
    """Remember ``nonce`` (a file created exclusively, so two threads or processes agree); False if seen before.
    Nonces older than the longest job lifetime are forgotten: a job that old is refused as expired anyway."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        fd = os.open(os.path.join(directory, nonce), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    horizon = time.time() - MAX_LIFETIME.total_seconds() - 3600
    with os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < horizon:
                    os.unlink(entry.path)
    return True
