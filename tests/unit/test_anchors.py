"""Which snapshot the records say is a files target's newest in a repository: the guess a verification restores
before the listing chooses."""

from __future__ import annotations

from typing import Any

from agents.contract.records import BackupRecord, parse_record
from agents.jobs.anchors import Anchors
from tests.support.records import backup_document


def _record(snapshot_id: str, time: str, **changes: Any) -> BackupRecord:
    record = parse_record(backup_document(snapshot_id[:4], snapshot={"id": snapshot_id, "time": time}, **changes))
    assert isinstance(record, BackupRecord)
    return record


def _anchors(*records: BackupRecord) -> Anchors:
    return Anchors({r.snapshot.id: r for r in records if r.snapshot is not None})


def test_the_newest_recorded_backup_of_the_target_in_the_repository_is_guessed() -> None:
    older = _record("a" * 64, "2026-11-30T02:00:00Z")
    newer = _record("b" * 64, "2026-12-01T02:00:00Z")
    other_target = _record("c" * 64, "2026-12-02T02:00:00Z", target={"name": "mail", "kind": "files"})
    other_host = _record("d" * 64, "2026-12-02T02:00:00Z", host="app02")
    database = _record("e" * 64, "2026-12-02T02:00:00Z",
                       target={"name": "documents", "kind": "postgres", "database": "shop"})
    other_repository = _record("f" * 64, "2026-12-02T02:00:00Z", repository={"name": "far", "site": "far"})
    anchors = _anchors(newer, other_target, older, other_host, database, other_repository)
    assert anchors.newest_files_snapshot("app01", "documents", "local") == "b" * 64
    assert anchors.newest_files_snapshot("app01", "documents", "nowhere") is None
    assert anchors.newest_files_snapshot("app03", "documents", "local") is None


def test_in_the_repository_it_was_copied_to_the_copy_is_guessed() -> None:
    copied = {"repository": "same-city", "site": "far", "verified": True, "copied": [
        {"job_id": "j0", "source_snapshot_id": "9" * 64, "copy_snapshot_id": "8" * 64, "tree": None,
         "same_tree": True},  # an older backup copied in the same run: not this record's snapshot
        {"job_id": "j1", "source_snapshot_id": "a" * 64, "copy_snapshot_id": "c" * 64, "tree": None,
         "same_tree": True}]}
    not_copied = _record("b" * 64, "2026-12-01T02:00:00Z",
                         replication=[{"repository": "same-city", "site": "far", "copied": []}])
    anchors = _anchors(_record("a" * 64, "2026-11-30T02:00:00Z", replication=[copied]), not_copied)
    assert anchors.newest_files_snapshot("app01", "documents", "same-city") == "c" * 64
    assert anchors.newest_files_snapshot("app01", "documents", "local") == "b" * 64
