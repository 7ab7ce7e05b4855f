"""The one entry point for work on an agent: :func:`execute` a ``drill.job/v1``, get its signed records.

``drill-agent backup/verify/check``, the schedule daemon and the coordinator
all come through here. A job the agent will not run -- expired,
naming a policy, target or repository the agent does not have, with scratch
settings that are not valid -- is not an exception: it ends in a signed
``refused`` record whose finding says why, like any other outcome.
"""

from __future__ import annotations

from collections.abc import Callable

from agents.config.model import AgentConfig
from agents.contract.configfile import ProblemCollector, check_schema
from agents.contract.documents import utc_now
from agents.contract.jobs import BackupJob, CheckJob, Job, VerifyJob
from agents.contract.records import RefusedJob, SignedRecord
from agents.jobs.backup import ProgressCallback, run_policy_backup
from agents.jobs.check import run_check
from agents.jobs.verify import run_verify
from agents.records import RecordDraft, RefusedDraft, job_record
from agents.repositories import open_outbox
from agents.scratch.config import SCHEMA as SCRATCH_SCHEMA


def execute(config: AgentConfig, job: Job, *, progress: ProgressCallback | None = None) -> list[SignedRecord]:
    """Run ``job`` on the agent of ``config``; return the signed records it ended in (in the outbox too).

    Raises ``PolicyBusy`` when a backup's policy is already running (the caller
    retries later); every other outcome, refusals included, is a record.
    """
    refusal = _refusal(config, job)
    if refusal is not None:
        return [refuse(config, job, *refusal)]
    if isinstance(job, BackupJob):
        return run_policy_backup(config, job.policy, job.level, progress=progress, only_target=job.target,
                                 request=job.id)
    if isinstance(job, VerifyJob):
        return run_verify(config, job, target_kind(config, job) or "files")
    return run_check(config, job)


def target_kind(config: AgentConfig, job: VerifyJob) -> str | None:
    """The kind of the target a verify job names: the job's word, else the agent's own target of that name."""
    if job.target_kind is not None:
        return job.target_kind
    own = config.targets.get(job.target)
    return own.kind if own is not None else None


def _refusal(config: AgentConfig, job: Job) -> tuple[str, str] | None:
    """(code, reason) when the agent will not run ``job``, else None."""
    if job.expires is not None and job.expires < utc_now():
        return "job_expired", f"the job expired at {job.expires.isoformat()}"
    checks: dict[type, Callable[[AgentConfig, Job], tuple[str, str] | None]] = {
        BackupJob: _backup_refusal, VerifyJob: _verify_refusal, CheckJob: _check_refusal}
    return checks[type(job)](config, job)


def _unknown(what: str, name: str, known: list[str]) -> str:
    return f"unknown {what} {name!r}; this agent has: {', '.join(sorted(known)) or 'none'}"


def _backup_refusal(config: AgentConfig, job: Job) -> tuple[str, str] | None:
    assert isinstance(job, BackupJob)
    policy = config.policies.get(job.policy)
    if policy is None:
        return "unknown_policy", _unknown("policy", job.policy, list(config.policies))
    if job.target is not None and job.target not in policy.targets:
        return "unknown_target", _unknown(f"target of policy {job.policy!r},", job.target, list(policy.targets))
    return None


def _verify_refusal(config: AgentConfig, job: Job) -> tuple[str, str] | None:
    assert isinstance(job, VerifyJob)
    if job.repository not in config.repositories:
        return "unknown_repository", _unknown("repository", job.repository, list(config.repositories))
    kind = target_kind(config, job)
    if kind is None:
        return "unknown_target", (f"this agent has no target {job.target!r}, and the job does not say its kind "
                                  "(target_kind; --kind on the command line)")
    own = config.targets.get(job.target)
    if own is not None and own.kind != kind:
        return "target_kind_mismatch", f"the job says {job.target!r} is a {kind} target; here it is {own.kind}"
    if job.scratch is not None:
        out = ProblemCollector("job", None)
        if not check_schema(job.scratch, out, SCRATCH_SCHEMA):
            return "invalid_job", "scratch settings: " + "; ".join(f"{p.path}: {p.message}" for p in out.problems)
    return None


def _check_refusal(config: AgentConfig, job: Job) -> tuple[str, str] | None:
    assert isinstance(job, CheckJob)
    if job.repository not in config.repositories:
        return "unknown_repository", _unknown("repository", job.repository, list(config.repositories))
    return None


def refuse(config: AgentConfig, job: Job, code: str, reason: str) -> SignedRecord:
    """Write the signed record of a job the agent will not run."""
    return refuse_by_id(config, job.id, job.kind, code, reason, drill_id=getattr(job, "drill_id", None))


def refuse_by_id(config: AgentConfig, job_id: str, kind: str, code: str, reason: str, *,
                 drill_id: str | None = None) -> SignedRecord:
    """Write the signed refusal of a job known only by its id and kind (one that could not be read as a job)."""
    draft = RecordDraft(config.host, RefusedDraft(refused=RefusedJob(id=job_id, kind=kind)), request=job_id,
                        drill_id=drill_id)
    with job_record(open_outbox(config), draft):
        draft.add(code, "error", reason)
    return draft.written()
