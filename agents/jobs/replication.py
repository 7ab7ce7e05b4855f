"""Replication to the other site and retention, as steps of a backup job.

Replication copies every backup of the policy and target that the destination
lacks (so a copy that failed last night is made up tonight), then proves each
copy: the destination's snapshots must have the same tree ids as the source's, the
data's and the manifest's (a files backup of an earlier version holds its manifest
in the data's tree).

Retention forgets, in every repository of the policy, the backups
:func:`policies.retention.select_forgettable` names -- only among snapshots of
this host, policy and target, so another policy's or host's are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.config.model import AgentConfig
from agents.contract.records import CopiedBackup, Replication, RetentionResult
from agents.jobs import catalog
from agents.records import BackupDraft, RecordDraft
from agents.repositories import open_repository
from agents.restic.runner import Restic, ResticError
from agents.state import StateDir
from policies.config import PolicyConfig
from policies.retention import select_forgettable

Listing = list[catalog.StoredBackup]


def _list(restic: Restic, config: AgentConfig, policy: str, target: str, *, first: bool = False) -> Listing:
    return catalog.collect_backups(
        restic.snapshots(host=config.host, first_contact=first), host=config.host, policy=policy, target=target
    )


def _prove_copies(
    name: str, missing: Sequence[catalog.StoredBackup], copies: Mapping[str, catalog.StoredBackup],
    record: RecordDraft[BackupDraft],
) -> tuple[list[CopiedBackup], bool]:
    """Compare the tree of each source backup with its copy's; add findings; the copies and whether all match."""
    proven = True
    copied = []
    for backup in missing:
        copy = copies.get(backup.job_id)
        same = (
            copy is not None
            and copy.tree is not None
            and copy.tree == backup.tree
            and copy.manifest_tree == backup.manifest_tree  # the manifest's snapshot (None: inside the data's)
        )
        copied.append(CopiedBackup(job_id=backup.job_id, source_snapshot_id=backup.snapshot_id,
                                   copy_snapshot_id=copy.snapshot_id if copy else None, tree=backup.tree,
                                   same_tree=same))
        if not same:
            proven = False
            record.add(
                "replication_mismatch",
                "error",
                f"the copy of snapshot {backup.snapshot_id[:12]} in {name!r} is missing or has another tree",
                name,
            )
    if record.job_id not in copies:
        proven = False
        record.add("replication_mismatch", "error", f"this job's snapshot is not in {name!r} after the copy", name)
    return copied, proven


def replicate(
    config: AgentConfig, policy: PolicyConfig, source: Restic, record: RecordDraft[BackupDraft]
) -> dict[str, Listing]:
    """Copy the target's backups missing at each ``replicate_to`` repository and prove the copies.

    Sets ``record.details.replication`` (one entry per destination) and returns
    each reachable destination's backups after the copy. A failure is an error
    finding, never an exception.
    """
    listings: dict[str, Listing] = {}
    if not policy.replicate_to:
        return listings
    target = record.details.target.name
    try:
        source_backups = _list(source, config, policy.name, target)
    except ResticError as error:
        record.add("replication_failed", "error", f"cannot list the source: {error.describe()}", source.repository.name)
        return listings
    this_job = next((b for b in source_backups if b.job_id == record.job_id), None)
    snapshot = record.details.snapshot
    if this_job is not None and snapshot is not None:
        record.details.snapshot = snapshot.model_copy(update={"tree": this_job.tree})
    entries = []
    for name in policy.replicate_to:
        copied: list[CopiedBackup] = []
        verified = False
        with record.phase(f"replicate:{name}"):
            try:
                destination = open_repository(config, name)
                present = {b.job_id for b in _list(destination, config, policy.name, target, first=True)}
                missing = [b for b in source_backups if b.job_id not in present]
                if missing:
                    destination.copy_from(source.repository, [i for b in missing for i in b.snapshot_ids()])
                after = _list(destination, config, policy.name, target)
            except ResticError as error:
                record.add("replication_failed", "error", f"copy to {name!r} failed: {error.describe()}", name)
            else:
                listings[name] = after
                copied, verified = _prove_copies(name, missing, {b.job_id: b for b in after}, record)
        entries.append(Replication(repository=name, site=config.sites[name], copied=copied, verified=verified))
    record.details.replication = entries
    return listings


def apply_retention(
    config: AgentConfig, policy: PolicyConfig, source: Restic, listings: Mapping[str, Listing],
    record: RecordDraft[BackupDraft],
) -> None:
    """Forget what the policy's retention no longer keeps, in each repository listed in ``listings``."""
    if not policy.retention:
        return
    state = StateDir(config.state_dir)
    for name, backups in listings.items():
        with record.phase(f"retention:{name}"):
            by_id = {b.snapshot_id: b for b in backups}
            forget = []
            for series in sorted({b.series for b in backups}, key=str):
                points = [b.as_point() for b in backups if b.series == series]
                forget += [by_id[p.snapshot_id] for p in select_forgettable(points, policy.retention)]
            try:
                restic = source if name == policy.repository else open_repository(config, name)
                restic.forget([i for b in forget for i in b.snapshot_ids()], prune=policy.prune)
            except ResticError as error:
                record.add("retention_failed", "error", f"retention in {name!r} failed: {error.describe()}", name)
                continue
            catalog.LocalCatalog(state, name, config.repositories[name].url).remove(b.snapshot_id for b in forget)
            record.details.retention = {**record.details.retention, name: RetentionResult(
                forgotten=[b.snapshot_id for b in forget], kept=len(backups) - len(forget))}
