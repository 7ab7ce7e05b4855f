"""What a backup job leaves behind if it is killed (kill -9, power loss): noted before it starts, cleared after.

A job notes its id, repository and the files it stages in ``state_dir/journal/``
before restic starts, and clears the note once its signed record is written.
A note whose process is gone is the trace of a killed job: the snapshots carrying
its id (written, but never vouched for by a record) are forgotten, its staged
files removed and the repository's stale locks cleared -- so that a killed job
leaves nothing that later looks like a backup, or like someone else's snapshot.
A job that ended by an exception leaves its note the same way (its record may be
what could not be written). The agent clears these at start and before every
backup and verification.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from agents.state import StateDir, write_atomically

log = logging.getLogger(__name__)

# Jobs of this process that ended by an exception, their notes kept: taken as left behind although the process
# that wrote them lives on (a fleet worker), so that the next clean-up looks for their snapshots.
_ENDED: set[str] = set()


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class Note:
    job_id: str
    repository: str
    pid: int
    pid_start: str | None
    staged: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        """Whether the process that wrote the note still runs (the same process: its pid may have been reused)."""
        return self.pid_start is not None and _process_start(self.pid) == self.pid_start


class Journal:
    def __init__(self, state: StateDir) -> None:
        self.state = state

    def _path(self, job_id: str) -> str:
        return os.path.join(self.state.sub("journal"), f"{job_id}.json")

    @contextlib.contextmanager
    def running(self, job_id: str, repository: str, staged: list[str]) -> Iterator[Note]:
        """Note the job for as long as the block runs (``staged`` may grow while it runs).

        A block that raises leaves its note, as a killed job's is left: what raised may be the writing of the
        job's record, after its snapshots were stored, and a snapshot no record names must be forgotten. The
        clean-up forgets the job's snapshots its record does not name, all of them when it wrote none
        (:mod:`agents.jobs.leftovers`).
        """
        pid = os.getpid()
        note = Note(job_id, repository, pid, _process_start(pid), staged)
        self._write(note)
        try:
            yield note
        except BaseException:
            _ENDED.add(job_id)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(job_id))

    def _write(self, note: Note) -> None:
        document = {"job_id": note.job_id, "repository": note.repository, "pid": note.pid,
                    "pid_start": note.pid_start, "staged": note.staged}
        write_atomically(self._path(note.job_id), json.dumps(document).encode())

    def left_behind(self) -> list[Note]:
        """The notes of jobs whose process is gone, or that ended by an exception in this process."""
        notes = []
        folder = self.state.sub("journal")
        for name in sorted(os.listdir(folder)):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    raw = json.load(handle)
                note = Note(str(raw["job_id"]), str(raw["repository"]), int(raw["pid"]),
                            raw.get("pid_start"), [str(p) for p in raw.get("staged", [])])
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable journal note %s removed", name)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                continue
            if not note.alive or note.job_id in _ENDED:
                notes.append(note)
        return notes

    def clear(self, note: Note) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(note.job_id))
        _ENDED.discard(note.job_id)


def clean_up_left_behind(state: StateDir, forget_job: Callable[[Note], None]) -> list[Note]:
    """Undo what killed jobs left: ``forget_job(note)`` forgets the job's unrecorded snapshots (and may raise
    to keep the note for next time); staged files are removed. Returns the notes cleared."""
    journal = Journal(state)
    cleared = []
    for note in journal.left_behind():
        try:
            forget_job(note)
        except Exception as error:  # a repository that cannot be reached now: try again next time
            log.warning("could not clean up after killed job %s yet: %s", note.job_id, error)
            continue
        for path in note.staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        journal.clear(note)
        cleared.append(note)
    return cleared
