"""How drill's backups are laid out in a restic repository, and the agent's local index of them.

A backup is a pair of snapshots sharing ``drill.job``: the target's data and its manifest
(``drill.part=manifest``, one file: ``backup --stdin``). Their tags say who and what:
``drill.job``, ``drill.policy``, ``drill.target``, ``drill.level``, and on the data's
snapshot ``drill.part`` and ``drill.base``. Data without its manifest is not a complete
backup; every step that copies or forgets a backup acts on both (``StoredBackup.snapshot_ids``).

- A files backup's data snapshot (``drill.part=files``) holds the target's roots, as
  restic users expect; restic walks them while the agent makes the manifest beside it
  (``agents/jobs/backup.py``), so the manifest can only be stored after restic read the
  files: in a snapshot of its own.
- A database dump (``drill.part=dump``, ``drill.database``): the dump's manifest names
  the dump's snapshot id inside (``snapshot_id``).

The manifest's restic starts before the data's id and the manifest's digest exist (it waits
on its stdin, so that its start overlaps the backup), so neither is a tag: the signed
record holds both, and only the record is trusted. Read as well, from earlier versions:
files backups of **one** snapshot holding the data and the manifest file
(``drill.manifest=<path in the snapshot>``, ``drill.digest``), and dump manifests that carry
``drill.for=<dump id>`` and ``drill.digest``.

The agent keeps an index of the backups it made in ``state_dir/catalog/`` so that
planning the next backup costs no restic call; whenever the index has nothing
for a policy and target, or restic no longer knows a snapshot it names, the index
is rebuilt from ``restic snapshots``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from agents.restic.messages import Snapshot
from agents.state import StateDir, write_atomically
from policies.levels import BackupPoint, Level

PREFIX = "drill."


def tag(key: str, value: str) -> str:
    """A ``drill.KEY=VALUE`` tag. Values never contain commas (restic splits --tag on them)."""
    if "," in value:
        raise ValueError(f"tag value {value!r} contains a comma")
    return f"{PREFIX}{key}={value}"


def make_files_tags(job_id: str, policy: str, target: str, level: Level, base: str | None) -> list[str]:
    """The tags of a files backup's data snapshot."""
    return [
        tag("job", job_id),
        tag("policy", policy),
        tag("target", target),
        tag("level", level.value),
        tag("base", base or "none"),
        tag("part", "files"),
    ]


def make_manifest_tags(job_id: str, policy: str, target: str, level: Level, database: str | None = None) -> list[str]:
    """The tags of a backup's manifest snapshot: only what is known when its restic starts (early, to wait on its
    stdin), so neither the data's snapshot id nor the manifest's digest (the signed record holds both)."""
    return [
        tag("job", job_id),
        tag("policy", policy),
        tag("target", target),
        tag("level", level.value),
        *([tag("database", database)] if database is not None else []),
        tag("part", "manifest"),
    ]


@dataclass(frozen=True)
class StoredBackup:
    """One backup as the agent knows it: its data's snapshot and its manifest (in a snapshot of its own, or inside
    the data's snapshot for a files backup of an earlier version)."""

    job_id: str
    host: str
    policy: str
    target: str
    level: Level
    snapshot_id: str
    time: datetime
    base: str | None
    manifest_path: str
    manifest_digest: str  # "" for a dump whose manifest snapshot does not carry it (the signed record does)
    tree: str | None = None
    original: str | None = None  # for a copy: the id of the snapshot it was copied from
    database: str | None = None  # a database dump's
    # The manifest's own snapshot (None: an earlier files backup's manifest inside the data's snapshot).
    manifest_snapshot_id: str | None = None
    manifest_tree: str | None = None
    manifest_for: str | None = None  # the dump snapshot id the manifest's tag names (``drill.for``, older dumps)
    manifest_original: str | None = None  # for a copy: the id of the manifest snapshot it was copied from

    @property
    def manifest_in_data(self) -> bool:
        """Whether the manifest is a file inside the data's snapshot (files backups of earlier versions)."""
        return self.manifest_snapshot_id is None

    def names_this_dump(self, dump_id: str | None) -> bool:
        """Whether ``dump_id`` (what the manifest names) is this backup's dump or the dump it was copied from."""
        return dump_id is not None and dump_id in (self.snapshot_id, self.original)

    def as_point(self) -> BackupPoint:
        return BackupPoint(self.snapshot_id, self.time, self.level, usable=True)

    @property
    def series(self) -> tuple[str, str, str, str | None]:
        """What retention counts within: host, policy, target and (for dumps) database."""
        return (self.host, self.policy, self.target, self.database)

    def snapshot_ids(self) -> list[str]:
        """Every snapshot of this backup: the data, and the manifest's."""
        return [self.snapshot_id] + ([self.manifest_snapshot_id] if self.manifest_snapshot_id else [])

    def to_json(self) -> dict[str, object]:
        document = asdict(self)
        document["level"] = self.level.value
        document["time"] = self.time.isoformat()
        return document

    @classmethod
    def from_json(cls, document: dict[str, object]) -> StoredBackup:
        values = dict(document)
        values["level"] = Level(str(values["level"]))
        values["time"] = datetime.fromisoformat(str(values["time"]))
        return cls(**values)  # type: ignore[arg-type]


def backup_from_snapshot(snapshot: Snapshot) -> StoredBackup | None:
    """The files backup of an earlier version that ``snapshot`` holds whole (data and manifest), or None."""
    values = {key: snapshot.tag_value(PREFIX + key) for key in
              ("job", "policy", "target", "level", "base", "manifest", "digest")}
    if any(v is None for v in values.values()):
        return None
    try:
        level = Level(values["level"] or "")
    except ValueError:
        return None
    return StoredBackup(
        job_id=values["job"] or "",
        host=snapshot.hostname,
        policy=values["policy"] or "",
        target=values["target"] or "",
        level=level,
        snapshot_id=snapshot.id,
        time=snapshot.time,
        base=None if values["base"] == "none" else values["base"],
        manifest_path=values["manifest"] or "",
        manifest_digest=values["digest"] or "",
        tree=snapshot.tree,
        original=snapshot.original,
    )


_DATA_PARTS = ("files", "dump")


def paired_backups(snapshots: Sequence[Snapshot], *, strict: bool = True) -> list[StoredBackup]:
    """Files backups and database dumps among ``snapshots``, each data snapshot paired with its manifest snapshot.

    A data snapshot whose manifest snapshot is missing is not a complete backup and is left out.
    They pair by job. A manifest whose tag names its dump (``drill.for``, made by
    agents before the tag was dropped) pairs only with that dump unless
    ``strict=False`` (verification), which also pairs it with a dump of the same
    job written later, so that the verification can report it instead of not
    seeing it; for the others the verification compares the id the manifest names
    inside (``dump_snapshot_mismatch``).
    """
    manifests: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        if snapshot.tag_value(PREFIX + "part") == "manifest":
            manifests[snapshot.tag_value(PREFIX + "job") or ""] = snapshot
    found = []
    for dump in snapshots:
        job = dump.tag_value(PREFIX + "job")
        manifest = manifests.get(job or "")
        part = dump.tag_value(PREFIX + "part")
        if part not in _DATA_PARTS or manifest is None:
            continue
        named = manifest.tag_value(PREFIX + "for")
        if strict and named is not None and named not in (dump.id, dump.original):
            continue
        try:
            level = Level(dump.tag_value(PREFIX + "level") or "")
        except ValueError:
            continue
        found.append(StoredBackup(
            job_id=job or "",
            host=dump.hostname,
            policy=dump.tag_value(PREFIX + "policy") or "",
            target=dump.tag_value(PREFIX + "target") or "",
            level=level,
            snapshot_id=dump.id,
            time=dump.time,
            base=_base(dump.tag_value(PREFIX + "base")) if part == "files" else None,
            manifest_path=manifest.paths[0] if manifest.paths else "",
            manifest_digest=manifest.tag_value(PREFIX + "digest") or "",
            tree=dump.tree,
            original=dump.original,
            database=dump.tag_value(PREFIX + "database") if part == "dump" else None,
            manifest_snapshot_id=manifest.id,
            manifest_tree=manifest.tree,
            manifest_for=named,
            manifest_original=manifest.original,
        ))
    return found


def _base(tag: str | None) -> str | None:
    return None if tag in (None, "none") else tag


def collect_backups(
    snapshots: Iterable[Snapshot], *, host: str | None = None, policy: str | None = None, target: str | None = None,
    strict: bool = True,
) -> list[StoredBackup]:
    """drill's backups among ``snapshots``, optionally of one host/policy/target; oldest first.

    Snapshots without drill's tags (made by hand or by another tool) are ignored;
    ``strict``: see :func:`paired_backups`.
    """
    every = list(snapshots)
    candidates = [backup_from_snapshot(s) for s in every] + list(paired_backups(every, strict=strict))
    found = []
    for backup in candidates:
        if backup is None:
            continue
        if (host is not None and backup.host != host) or (policy is not None and backup.policy != policy):
            continue
        if target is not None and backup.target != target:
            continue
        found.append(backup)
    found.sort(key=lambda b: b.time)
    return found


def find_backup(backups: Sequence[StoredBackup], snapshot_id: str) -> StoredBackup | None:
    """The backup whose snapshot is ``snapshot_id``."""
    return next((b for b in backups if b.snapshot_id == snapshot_id), None)


class LocalCatalog:
    """The agent's index of its backups in one repository, in ``state_dir/catalog/NAME.json``.

    Bound to the repository's URL: pointing the name at another repository
    starts an empty index.
    """

    def __init__(self, state: StateDir, repository: str, url: str) -> None:
        self.path = os.path.join(state.sub("catalog"), f"{repository}.json")
        self.url = url

    def _load(self) -> list[StoredBackup]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        if not isinstance(document, dict) or document.get("url") != self.url:
            return []
        try:
            return [StoredBackup.from_json(b) for b in document.get("backups", [])]
        except (KeyError, TypeError, ValueError):
            return []  # an index we cannot read is rebuilt from the repository

    def _save(self, backups: Iterable[StoredBackup]) -> None:
        document = {"url": self.url, "backups": [b.to_json() for b in sorted(backups, key=lambda b: b.time)]}
        write_atomically(self.path, json.dumps(document, indent=1).encode())

    def backups(self, host: str, policy: str, target: str) -> list[StoredBackup]:
        return [b for b in self._load() if (b.host, b.policy, b.target) == (host, policy, target)]

    def add(self, backup: StoredBackup) -> None:
        self._save([*(b for b in self._load() if b.snapshot_id != backup.snapshot_id), backup])

    def remove(self, snapshot_ids: Iterable[str]) -> None:
        gone = set(snapshot_ids)
        self._save(b for b in self._load() if b.snapshot_id not in gone)

    def replace(self, host: str, policy: str, target: str, backups: Iterable[StoredBackup]) -> None:
        """Make the index of one host/policy/target equal to ``backups`` (read from the repository)."""
        others = [b for b in self._load() if (b.host, b.policy, b.target) != (host, policy, target)]
        self._save([*others, *backups])
