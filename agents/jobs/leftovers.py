"""Undoing what killed or failed jobs left in a repository: snapshots no record vouches for, stale locks, staged files.

See ``agents/journal.py`` for how a job notes itself. A backup's snapshots carry its job id in their ``drill.job``
tag; those of a job whose note was left (killed, or ended by an exception) are forgotten unless the job's own record
names them -- all of them when no record was written (a snapshot nobody vouches for would otherwise be reported as
``unrecorded_snapshot`` by every verification after it, kept by retention and refused as a base).
"""

from __future__ import annotations

import logging

from agents.config.model import AgentConfig
from agents.contract.documents import DocumentError
from agents.contract.signing import SignatureError
from agents.jobs.catalog import PREFIX
from agents.journal import Note, clean_up_left_behind
from agents.repositories import open_record_store, open_repository
from agents.state import StateDir

log = logging.getLogger(__name__)


def clean_up_killed_jobs(config: AgentConfig) -> list[str]:
    """Forget the snapshots of this agent's killed or failed jobs that their records do not name; the ids of the
    jobs cleaned up."""

    def forget(note: Note) -> None:
        if note.repository not in config.repositories:
            return  # the repository was removed from the config since
        named = _named_by_record(config, note.job_id)
        if named is None:
            return
        restic = open_repository(config, note.repository)
        left = [s.id for s in restic.snapshots(host=config.host, first_contact=True)
                if s.tag_value(PREFIX + "job") == note.job_id and not _among(s.id, named)]
        restic.forget(left, prune=False)
        restic.unlock()  # stale locks only: a live job elsewhere is never disturbed
        if left:
            log.warning("forgot %d snapshot(s) of job %s that no record of it names", len(left), note.job_id)

    return [note.job_id for note in clean_up_left_behind(StateDir(config.state_dir), forget)]


def _named_by_record(config: AgentConfig, job_id: str) -> frozenset[str] | None:
    """The snapshot ids job ``job_id``'s own record names (its data's or dump's and its manifest's); empty when the
    job wrote no record; None when it wrote one that cannot be read or that the coordinator refused -- nothing is
    forgotten on the strength of a record not understood."""
    store = open_record_store(config)
    if store.outbox.was_refused(job_id):
        log.warning("the record of job %s was refused by the coordinator; its snapshots are left as they are", job_id)
        return None
    try:
        record = store.backup_record(job_id)
    except (OSError, SignatureError, DocumentError) as error:
        log.warning("the record of job %s cannot be read (%s); its snapshots are left as they are", job_id, error)
        return None
    if record is None:
        return frozenset()
    named = {record.snapshot.id} if record.snapshot is not None else set()
    if record.manifest is not None and record.manifest.snapshot_id:
        named.add(record.manifest.snapshot_id)
    return frozenset(named)


def _among(snapshot_id: str, named: frozenset[str]) -> bool:
    """Whether ``snapshot_id`` (full) is one of ``named`` (full, or short in records of older agents)."""
    return any(snapshot_id.startswith(known) for known in named)
