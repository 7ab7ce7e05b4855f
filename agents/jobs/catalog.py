"""How drill's backups are laid out in a restic repository, and how to read them back.

A backup job leaves two snapshots that share the tag ``drill.job=<job id>``:

* the **data** snapshot (``drill.kind=data``) with the target's content, tagged
  with its policy, target, level and base;
* the **manifest** snapshot (``drill.kind=manifest``) holding ``manifest.json``,
  tagged with the data snapshot's id, the job's outcome and the manifest digest.

Both travel together with ``restic copy`` (tags are kept), so the other site has
the manifest of every snapshot it holds. A data snapshot without its manifest is
an unfinished job: listed, never used as a base.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agents.restic.messages import Snapshot
from policies.levels import BackupPoint, Level

PREFIX = "drill."
MANIFEST_FILENAME = "manifest.json"
MANIFEST_PATH = "/" + MANIFEST_FILENAME  # where ``backup --stdin`` puts it in the snapshot


def tag(key: str, value: str) -> str:
    """A ``drill.KEY=VALUE`` tag. Values never contain commas (restic splits --tag on them)."""
    if "," in value:
        raise ValueError(f"tag value {value!r} contains a comma")
    return f"{PREFIX}{key}={value}"


def make_data_tags(job_id: str, policy: str, target: str, level: Level, base: str | None) -> list[str]:
    return [
        tag("kind", "data"),
        tag("job", job_id),
        tag("policy", policy),
        tag("target", target),
        tag("level", level.value),
        tag("base", base or "none"),
    ]


def make_manifest_tags(
    job_id: str, policy: str, target: str, level: Level, data_snapshot: str, outcome: str, digest: str
) -> list[str]:
    return [
        tag("kind", "manifest"),
        tag("job", job_id),
        tag("policy", policy),
        tag("target", target),
        tag("level", level.value),
        tag("for", data_snapshot),
        tag("outcome", outcome),
        tag("digest", digest),
    ]


@dataclass(frozen=True)
class StoredBackup:
    """A backup job as found in a repository: its data snapshot and, if finished, its manifest."""

    job_id: str
    policy: str
    target: str
    level: Level
    data: Snapshot
    manifest: Snapshot | None

    @property
    def outcome(self) -> str:
        if self.manifest is None:
            return "unfinished"
        return self.manifest.tag_value(PREFIX + "outcome") or "unknown"

    @property
    def manifest_digest(self) -> str | None:
        return self.manifest.tag_value(PREFIX + "digest") if self.manifest else None

    @property
    def base(self) -> str | None:
        value = self.data.tag_value(PREFIX + "base")
        return None if value in (None, "none") else value

    @property
    def usable(self) -> bool:
        """Finished without error: may serve as the base of a later backup."""
        return self.outcome == "success"

    def as_point(self) -> BackupPoint:
        return BackupPoint(self.data.id, self.data.time, self.level, self.usable)

    def snapshot_ids(self) -> list[str]:
        return [self.data.id] + ([self.manifest.id] if self.manifest else [])


def collect_backups(
    snapshots: Iterable[Snapshot], *, host: str | None = None, policy: str | None = None, target: str | None = None
) -> list[StoredBackup]:
    """Pair data and manifest snapshots by job, optionally of one host/policy/target; oldest first.

    Snapshots without drill tags (made by hand or another tool) are ignored.
    """
    data: dict[str, Snapshot] = {}
    manifests: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        if host is not None and snapshot.hostname != host:
            continue
        job = snapshot.tag_value(PREFIX + "job")
        kind = snapshot.tag_value(PREFIX + "kind")
        if job is None:
            continue
        if policy is not None and snapshot.tag_value(PREFIX + "policy") != policy:
            continue
        if target is not None and snapshot.tag_value(PREFIX + "target") != target:
            continue
        if kind == "data":
            data[job] = snapshot
        elif kind == "manifest":
            manifests[job] = snapshot
    backups = []
    for job, snapshot in data.items():
        try:
            level = Level(snapshot.tag_value(PREFIX + "level") or "")
        except ValueError:
            continue
        manifest = manifests.get(job)
        if manifest is not None and manifest.tag_value(PREFIX + "for") not in (snapshot.id, snapshot.original):
            manifest = None  # a manifest that names another snapshot is not this one's
        backups.append(
            StoredBackup(
                job_id=job,
                policy=snapshot.tag_value(PREFIX + "policy") or "",
                target=snapshot.tag_value(PREFIX + "target") or "",
                level=level,
                data=snapshot,
                manifest=manifest,
            )
        )
    backups.sort(key=lambda b: b.data.time)
    return backups


def find_backup(backups: Sequence[StoredBackup], snapshot_id: str) -> StoredBackup | None:
    """The backup whose data snapshot is ``snapshot_id``."""
    return next((b for b in backups if b.data.id == snapshot_id), None)
