"""How a database dump's two snapshots are paired from a listing (``agents/jobs/catalog.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.jobs.catalog import collect_backups, paired_backups
from agents.restic.messages import Snapshot

JOB = "job-1"


def _snapshot(snapshot_id: str, *tags: str, original: str | None = None) -> Snapshot:
    common = (f"drill.job={JOB}", "drill.policy=nightly", "drill.target=db", "drill.level=full",
              "drill.database=app")
    return Snapshot(id=snapshot_id, short_id=snapshot_id[:8], time=datetime(2026, 12, 1, tzinfo=UTC), tree="t" * 64,
                    paths=(f"/{snapshot_id}",), hostname="vm", tags=common + tags, parent=None, original=original)


def _dump(snapshot_id: str) -> Snapshot:
    return _snapshot(snapshot_id, "drill.part=dump", "drill.base=none")


def test_a_manifest_without_a_tag_naming_its_dump_pairs_by_job() -> None:
    # The layout of today: the manifest's restic starts before the dump's id or the manifest's digest exist.
    [paired] = paired_backups([_dump("d" * 64), _snapshot("m" * 64, "drill.part=manifest")])
    assert (paired.snapshot_id, paired.manifest_snapshot_id, paired.database) == ("d" * 64, "m" * 64, "app")
    assert paired.manifest_for is None and paired.manifest_digest == ""
    assert paired.names_this_dump("d" * 64) and not paired.names_this_dump("x" * 64)
    assert not paired.names_this_dump(None)


def test_a_manifest_tagged_with_its_dump_pairs_only_with_it_unless_verifying() -> None:
    # The earlier layout (drill.for, drill.digest) is still read; a dump written later under the job's tags is
    # not a backup to plan with, but a verification sees it (and reports that the manifest names another dump).
    old = _snapshot("m" * 64, "drill.part=manifest", f"drill.for={'d' * 64}", "drill.digest=sha256:ab")
    snapshots = [_dump("d" * 64), _dump("e" * 64), old]
    assert [(b.snapshot_id, b.manifest_digest) for b in paired_backups(snapshots)] == [("d" * 64, "sha256:ab")]
    assert sorted(b.snapshot_id for b in paired_backups(snapshots, strict=False)) == ["d" * 64, "e" * 64]
    assert [b.snapshot_id for b in collect_backups(snapshots, target="db")] == ["d" * 64]


def test_a_copied_dump_names_its_original() -> None:
    copy = _snapshot("c" * 64, "drill.part=dump", "drill.base=none", original="d" * 64)
    [paired] = paired_backups([copy, _snapshot("n" * 64, "drill.part=manifest", original="m" * 64)])
    assert paired.names_this_dump("d" * 64) and paired.names_this_dump("c" * 64)
    assert paired.manifest_original == "m" * 64


def test_a_dump_without_its_manifest_is_no_backup() -> None:
    assert paired_backups([_dump("d" * 64)]) == []
    assert paired_backups([_snapshot("m" * 64, "drill.part=manifest")]) == []


def test_a_files_backup_pairs_its_data_and_manifest_snapshots_by_job() -> None:
    data = _snapshot("f" * 64, "drill.part=files", "drill.base=" + "b" * 64)
    manifest = _snapshot("m" * 64, "drill.part=manifest")
    [paired] = paired_backups([data, manifest])
    # The digest is not a tag (the manifest's restic starts before it exists): the signed record holds it.
    assert (paired.snapshot_id, paired.manifest_snapshot_id, paired.manifest_digest) == ("f" * 64, "m" * 64, "")
    assert paired.database is None and paired.base == "b" * 64 and not paired.manifest_in_data
    assert paired.snapshot_ids() == ["f" * 64, "m" * 64]  # copied and forgotten together
    assert paired_backups([data]) == [] and collect_backups([data]) == []  # data alone is not a backup
