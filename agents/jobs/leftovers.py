"""Undoing what killed jobs left in a repository: snapshots no record vouches for, stale locks, staged files.

See ``agents/journal.py`` for how a job notes itself. A killed backup's
snapshots carry its job id in their ``drill.job`` tag; when the job's record was
never written, they are forgotten (a snapshot nobody vouches for would otherwise
be reported as ``unrecorded_snapshot`` by every verification after it).
"""

from __future__ import annotations

import logging

from agents.config.model import AgentConfig
from agents.jobs.catalog import PREFIX
from agents.journal import Note, clean_up_left_behind
from agents.repositories import open_record_store, open_repository
from agents.state import StateDir

log = logging.getLogger(__name__)


def clean_up_killed_jobs(config: AgentConfig) -> list[str]:
    """Forget the unrecorded snapshots of killed jobs of this agent; the ids of the jobs cleaned up."""

    def forget(note: Note) -> None:
        if open_record_store(config).find_job(note.job_id) is not None:
            return  # its record was written just before the kill: nothing to undo
        if note.repository not in config.repositories:
            return  # the repository was removed from the config since
        restic = open_repository(config, note.repository)
        left = [s.id for s in restic.snapshots(host=config.host, first_contact=True)
                if s.tag_value(PREFIX + "job") == note.job_id]
        restic.forget(left, prune=False)
        restic.unlock()  # stale locks only: a live job elsewhere is never disturbed
        if left:
            log.warning("forgot %d snapshot(s) of killed job %s: no record vouches for them", len(left), note.job_id)

    return [note.job_id for note in clean_up_left_behind(StateDir(config.state_dir), forget)]
