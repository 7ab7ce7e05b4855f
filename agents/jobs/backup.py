"""The backup job: one target of one policy, at a level, into restic, with its manifest.

Steps, each timed in the record: plan the level from the agent's index of its
backups → walk and stat the target, keeping the walk on disk (``walk``) →
``restic backup`` of the target's roots with exactly what the walk left out
excluded (``backup``), while beside it the agent hashes the walked files into the
manifest, reusing the base's hashes for unchanged files (``hash``) → the manifest
stored in a snapshot of its own (``manifest``; :mod:`agents.jobs.catalog`) →
restic's account of what it stored proven against the manifest
(:mod:`agents.jobs.snapshot_proof`) and the files that changed since the walk's
stat named (:mod:`agents.jobs.restat`) → replicate to the policy's other
repositories and prove the copies → apply retention. Every stat precedes restic's
start, which is what makes a file that changed while the two read it visible at
the end. Every step that fails becomes a finding; the record's outcome is
``success`` only if nothing went wrong.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from agents import process
from agents.config.model import AgentConfig
from agents.contract.errors import InputError
from agents.contract.records import BackupTarget, FilesManifestInfo, LevelInfo, ResticInfo, SignedRecord, SnapshotRef
from agents.inthread import InThread
from agents.jobs import catalog, snapshot_proof
from agents.jobs.anchors import collect_anchors
from agents.jobs.dumpstream import PendingStdinBackup
from agents.jobs.leftovers import clean_up_killed_jobs
from agents.jobs.replication import apply_retention, replicate
from agents.jobs.restat import ReadSinceBase
from agents.journal import Journal
from agents.records import BackupDraft, RecordDraft, decide_outcome, job_record, new_backup_draft
from agents.repositories import open_outbox, open_record_store, open_repository
from agents.restic import excludes
from agents.restic.exitcodes import ResticOutcome
from agents.restic.messages import BackupItem, BackupStatus
from agents.restic.runner import BackupRun, Restic, ResticError
from agents.state import StateDir, write_atomically
from policies.config import PolicyConfig
from policies.due import level_for_day
from policies.levels import Level, LevelDecision, choose_level
from targets import hashing
from targets.files import manifest as files_manifest
from targets.files import manifest_store, walkspill
from targets.files.config import FilesTargetConfig
from targets.files.select import Found, Selection, walk

log = logging.getLogger(__name__)

# How many manifest entries the hashing writes between two looks at whether restic has failed.
_CHECK_RESTIC_EVERY = 4096

# Digest of the manifest document itself, as written in records and tags.
MANIFEST_DIGEST_ALGORITHM = "sha256"

ProgressCallback = Callable[[str, BackupStatus], None]


class UnknownPolicy(InputError):
    code = "unknown_policy"


@dataclass(frozen=True)
class JobContext:
    config: AgentConfig
    policy: PolicyConfig
    state: StateDir
    progress: ProgressCallback | None
    requested: Level
    request: str | None  # the drill.job id being answered


def run_policy_backup(
    config: AgentConfig,
    policy_name: str,
    level: Level | None = None,
    *,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
    only_target: str | None = None,
    request: str | None = None,
) -> list[SignedRecord]:
    """Back up every target of ``policy_name`` (or only ``only_target``); one signed record per target (per
    database of a database target), in the outbox.

    ``level`` None means: the level the policy's calendar gives for today.
    Raises ``PolicyBusy`` when the policy is already running, :class:`UnknownPolicy`
    for a policy or target the config does not have. Job failures do not raise: they are in the records.
    """
    policy = config.policies.get(policy_name)
    if policy is None:
        raise UnknownPolicy(f"unknown policy {policy_name!r}; defined: {', '.join(sorted(config.policies))}")
    if only_target is not None and only_target not in policy.targets:
        raise UnknownPolicy(f"policy {policy_name!r} has no target {only_target!r}; its targets: "
                            f"{', '.join(policy.targets)}")
    moment = now or datetime.now().astimezone()
    requested = level or level_for_day(policy.calendars, moment)
    state = StateDir(config.state_dir)
    context = JobContext(config, policy, state, progress, requested, request)
    records: list[SignedRecord] = []
    with state.policy_lock(policy_name):
        clean_up_killed_jobs(config)
        for target_name in policy.targets:
            if process.CANCELLATION.is_cancelled:
                break
            if only_target is not None and target_name != only_target:
                continue
            target = config.targets[target_name]
            if isinstance(target, FilesTargetConfig):
                records.append(run_target_backup(context, target))
            else:
                # Imported here: the database drivers cost a files-only run ~0.1 s of start-up.
                from agents.jobs.database import backup_database_target  # noqa: PLC0415

                records += backup_database_target(config, policy, target, requested, state, request=request)
    return records


def staged_paths(state: StateDir, job_id: str) -> tuple[str, str, str, str]:
    """Where a files backup stages its manifest, restic's exclusions, restic's account of what it stored and its
    walk (noted in the journal, so that a killed job's files are removed)."""
    staging = state.sub("staging")
    return (os.path.join(staging, f"manifest-{job_id}.bin"), os.path.join(staging, f"excludes-{job_id}.lst"),
            os.path.join(staging, f"stored-{job_id}.lst"), os.path.join(staging, f"walk-{job_id}.bin"))


def run_target_backup(context: JobContext, target: FilesTargetConfig) -> SignedRecord:
    """Back up one files target; always returns its (written) record, never raises for job failures."""
    config, policy = context.config, context.policy
    draft = new_backup_draft(config, policy, BackupTarget(name=target.name, kind=target.kind), context.requested,
                             context.request)
    try:
        with Journal(context.state).running(draft.job_id, policy.repository,
                                            list(staged_paths(context.state, draft.job_id))), \
                job_record(open_outbox(config), draft):
            complete = _run(context, target, context.requested, draft)
            draft.outcome = decide_outcome(draft, complete=complete)
    except Exception:  # the record says what happened; the next target still runs
        log.exception("backup of %s/%s failed unexpectedly", policy.name, target.name)
    return draft.written()


def _history(
    context: JobContext, restic: Restic, index: catalog.LocalCatalog, target: str, *, refresh: bool
) -> list[catalog.StoredBackup]:
    """This policy and target's backups: from the local index, or from the repository when the
    index has none or ``refresh`` is asked (the index is then rewritten)."""
    host, policy = context.config.host, context.policy.name
    known = [] if refresh else index.backups(host, policy, target)
    if known or (context.requested is Level.FULL and not context.policy.retention and not refresh):
        return known  # a full needs no history (no base), unless retention must see every backup
    listed = catalog.collect_backups(
        restic.snapshots(host=host, first_contact=True), host=host, policy=policy, target=target
    )
    index.replace(host, policy, target, listed)
    return listed


def _run(context: JobContext, target: FilesTargetConfig, requested: Level, record: RecordDraft[BackupDraft]) -> bool:
    config, policy = context.config, context.policy
    repository = config.repositories[policy.repository]
    index = catalog.LocalCatalog(context.state, repository.name, repository.url)
    try:
        restic = open_repository(config, policy.repository)
        record.details.restic = ResticInfo(version=str(restic.version))
        refresh = False
        while True:
            with record.phase("plan"):
                history = _history(context, restic, index, target.name, refresh=refresh)
                decision = choose_level(
                    requested, [b.as_point() for b in history], datetime.now().astimezone(), policy.max_full_interval
                )
            findings_before = len(record.findings)
            try:
                backup = _backup_files(context, restic, target, decision, history, record)
                break
            except ResticError as error:
                # The index named a snapshot restic no longer has (forgotten by hand,
                # repository replaced): rebuild the index from the repository, once.
                if error.outcome is not ResticOutcome.NOT_FOUND or refresh:
                    raise
                log.warning("base snapshot not in %s; re-reading its snapshots", repository.name)
                del record.findings[findings_before:]  # the retry finds them again
                refresh = True
    except ResticError as error:
        record.add(error.finding_code, "error", error.describe(), error.repository or None)
        return False
    if backup is None:
        return False
    index.add(backup)
    listings = {policy.repository: [*history, backup]}
    listings.update(replicate(config, policy, restic, record))
    apply_retention(config, policy, restic, listings, record)
    return True


def _open_base(
    config: AgentConfig, state: StateDir, restic: Restic, base: catalog.StoredBackup | None,
    record: RecordDraft[BackupDraft],
) -> files_manifest.BaseEntries | None:
    """The base's manifest entries, streamed in walk order: the local copy first, else the repository's, if this
    agent's own signed record of the base vouches for it; None if unusable (every file is hashed again; the record
    says why).

    A manifest from the repository is checked against the record's digest, never a tag: whoever holds the
    repository's password could plant a base whose manifest gives a file's stat the hash of other content, and an
    incremental that reused it would vouch for content the file never had."""
    if base is None:
        return None
    local = state.manifest_path(base.snapshot_id)  # written by this agent only, under the id it backed up
    if base.manifest_digest and _file_digest(local) == base.manifest_digest:
        return manifest_store.base_entries(local)
    anchors, _ = collect_anchors(open_record_store(config))
    vouching = anchors.record_for(base)
    expected = vouching.manifest.digest if vouching is not None and vouching.manifest is not None else None
    if expected is None:
        record.add("base_manifest_mismatch", "warning", f"no backup record of this agent vouches for base snapshot "
                   f"{base.snapshot_id[:12]}; every file is hashed again")
        return None
    if _file_digest(local) == expected:
        return manifest_store.base_entries(local)
    data = restic.dump(base.manifest_snapshot_id or base.snapshot_id, base.manifest_path)
    if hashing.digest_bytes(MANIFEST_DIGEST_ALGORITHM, data) != expected:
        record.add(
            "base_manifest_mismatch",
            "warning",
            f"the manifest in base snapshot {base.snapshot_id[:12]} does not match its digest; every file is re-hashed",
        )
        return None
    write_atomically(local, data)  # next time, from here
    return manifest_store.base_entries(local)


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashing.digest_file(MANIFEST_DIGEST_ALGORITHM, handle)
    except FileNotFoundError:
        return None


def _backup_files(
    context: JobContext,
    restic: Restic,
    target: FilesTargetConfig,
    decision: LevelDecision,
    history: list[catalog.StoredBackup],
    record: RecordDraft[BackupDraft],
) -> catalog.StoredBackup | None:
    """Walk and stat the target (kept on disk), then back up its roots with restic while the agent hashes what it
    walked into the manifest beside it; then store the manifest in a snapshot of its own and prove it against
    restic's account of the data's snapshot. None when no snapshot was made."""
    config, state = context.config, context.state
    record.details.level = LevelInfo(requested=decision.requested, effective=decision.level, reason=decision.reason)
    if decision.level is not decision.requested and not any(f.code == "level_upgraded" for f in record.findings):
        record.add("level_upgraded", "info", decision.reason)
    base = catalog.find_backup(history, decision.base.snapshot_id) if decision.base else None
    base_id = base.snapshot_id if base else None
    record.details.base_snapshot_id = base_id
    manifest_path, _, stored_file, walk_file = staged_paths(state, record.job_id)
    selection = Selection()
    try:
        with open(walk_file, "w+b") as walked:
            os.chmod(walk_file, 0o600)
            with record.phase("walk"):
                base_entries = (_open_base(config, state, restic, base, record)
                                if decision.level is not Level.FULL else None)
                entries = walkspill.write(walk(target.paths, target.exclude, [config.state_dir], selection), walked)
            if not entries:
                _report_selection(selection, record)
                record.add("nothing_to_back_up", "error", "none of the target's paths exists; no snapshot was made")
                return None
            walked.seek(0)
            job = _TargetBackup(context, restic, target, decision, base_id, selection, record)
            return _back_up_beside_the_hashing(job, base_entries, walkspill.read(walked))
    finally:
        for staged in (manifest_path, stored_file, walk_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)


@dataclass(frozen=True)
class _TargetBackup:
    """What each step of one files target's backup is given: the job, its repository, the level chosen, the walk's
    findings and the record the steps fill in."""

    context: JobContext
    restic: Restic
    target: FilesTargetConfig
    decision: LevelDecision
    base_id: str | None
    selection: Selection
    record: RecordDraft[BackupDraft]

    @property
    def manifest_path(self) -> str:
        """Where the manifest is written before it is stored (:func:`staged_paths`)."""
        return staged_paths(self.context.state, self.record.job_id)[0]


def _back_up_beside_the_hashing(
    job: _TargetBackup, base_entries: files_manifest.BaseEntries | None, found: Iterable[Found],
) -> catalog.StoredBackup | None:
    """Start ``restic backup`` of the walked roots (what the walk left out excluded exactly), hash the walked
    entries into the manifest beside it, then store the manifest and prove the two agree."""
    context, restic, target, decision, base_id, selection, record = (
        job.context, job.restic, job.target, job.decision, job.base_id, job.selection, job.record)
    config, policy, state = context.config, context.policy, context.state
    manifest_path, exclude_file, stored_file, _ = staged_paths(state, record.job_id)

    def report(status: BackupStatus) -> None:
        if context.progress is not None:
            context.progress(target.name, status)

    read_since_base = ReadSinceBase(incremental=base_entries is not None)
    manifest = files_manifest.FilesManifest(
        algorithm=target.hash, host=config.host, policy=policy.name, target=target.name, job_id=record.job_id,
        level=decision.level.value, roots=list(target.paths), exclude=list(target.exclude), base_snapshot_id=base_id,
        missing_roots=selection.missing_roots,
    )
    # The manifest's restic starts now and waits on its stdin: its start overlaps the backup instead of following
    # it (killed, never interrupted, if the manifest is not stored: restic 0.18 would store a part of it).
    with open(stored_file, "w+b") as spill, PendingStdinBackup(
        restic, filename=_manifest_name(target), host=config.host,
        tags=catalog.make_manifest_tags(record.job_id, policy.name, target.name, decision.level),
    ) as pending:
        os.chmod(stored_file, 0o600)
        account = snapshot_proof.SnapshotAccount(selection.roots, frozenset(), spill,
                                                 also=read_since_base.reported_by_restic)
        data = _DataBackup(restic, record, selection.roots, excludes.make_exclusions(selection.excluded),
                           exclude_file, host=config.host, parent=base_id, force=decision.level is Level.FULL,
                           tags=catalog.make_files_tags(record.job_id, policy.name, target.name, decision.level,
                                                        base_id),
                           on_status=report, on_item=account.take)
        try:
            written = _write_manifest(manifest, manifest_path, target, found, base_entries, read_since_base, data,
                                      record)
        except BaseException:
            data.stop("the manifest could not be written")
            raise
        return _store(job, data, pending, written, account, read_since_base)


def _manifest_name(target: FilesTargetConfig) -> str:
    """The manifest's file name in its snapshot."""
    return f"{target.name}.manifest"


class _DataBackup:
    """The ``restic backup`` of the target's roots, run in a thread while the agent makes the manifest."""

    def __init__(self, restic: Restic, record: RecordDraft[BackupDraft], roots: list[str],
                 exclusions: excludes.Exclusions, exclude_file: str, *, host: str, parent: str | None, force: bool,
                 tags: list[str], on_status: Callable[[BackupStatus], None],
                 on_item: Callable[[BackupItem], None]) -> None:
        self._restic = restic
        self._stop = process.Cancellation(parent=process.CANCELLATION)

        def run() -> BackupRun:
            with record.phase("backup"):
                return restic.backup_files(
                    roots, exclusions=exclusions, exclude_file=exclude_file, host=host, tags=tags, parent=parent,
                    force=force, on_status=on_status, on_item=on_item, cancellation=self._stop)

        self._run = InThread(run, "restic-backup")

    def result(self) -> BackupRun:
        """Wait for restic. Raises what it raised (:class:`ResticError`)."""
        return self._run.result()

    def raise_if_failed(self) -> None:
        """Raise what restic raised, if it has already ended with an error."""
        failure = self._run.failure()
        if failure is not None:
            raise failure

    def stop(self, reason: str) -> None:
        """Stop restic and forget the snapshot it made if it had ended (it has no manifest)."""
        self._stop.cancel(reason)
        run = self._run.value_if_returned()
        if run is not None:
            self._restic.forget_quietly([run.summary.snapshot_id])


@dataclass
class _Written:
    """The manifest the agent wrote beside restic."""

    writer: manifest_store.ManifestWriter
    listed: snapshot_proof.Fold
    counts: files_manifest.HashCounts
    manifest: files_manifest.FilesManifest


def _write_manifest(
    manifest: files_manifest.FilesManifest, manifest_path: str, target: FilesTargetConfig, found: Iterable[Found],
    base_entries: files_manifest.BaseEntries | None, read_since_base: ReadSinceBase, data: _DataBackup,
    record: RecordDraft[BackupDraft],
) -> _Written:
    """Hash the walked entries (reusing the base's hashes by stat) into the manifest file, folding its side of the
    snapshot proof as it goes. A manifest that could not be written whole is removed. Raises what restic's backup
    (``data``) raised as soon as it is seen to have failed."""
    counts = files_manifest.HashCounts()
    with record.phase("hash"):
        try:
            with open(manifest_path, "wb") as handle:
                os.chmod(manifest_path, 0o600)
                writer = manifest_store.ManifestWriter(handle, manifest)
                listed = snapshot_proof.Fold()  # the manifest's side of the snapshot proof
                for number, entry in enumerate(files_manifest.stream_entries(
                        found, target.hash, base_entries, counts, on_read=read_since_base.read_by_agent)):
                    writer.add(entry)
                    listed.take(entry)
                    if not number % _CHECK_RESTIC_EVERY:
                        data.raise_if_failed()  # restic gone (refused, stopped): no point hashing on
                manifest.unreadable = sorted(counts.unreadable, key=lambda u: u["path"])
                manifest.hashed_files, manifest.hashed_bytes = counts.hashed_files, counts.hashed_bytes
                manifest.reused_hashes = counts.reused
                writer.finish(manifest)
        except BaseException:
            os.unlink(manifest_path)  # a half-written manifest is nobody's base
            raise
    if isinstance(base_entries, manifest_store.BaseReader) and base_entries.failure:
        record.add("base_manifest_mismatch", "warning", f"the manifest of base snapshot "
                   f"{manifest.base_snapshot_id} could not be read ({base_entries.failure}); the files after that "
                   "point were hashed again")
    return _Written(writer, listed, counts, manifest)


def _report_selection(selection: Selection, record: RecordDraft[BackupDraft]) -> None:
    """Findings for what the walk (or the scan) could not take: missing roots, unreadable and special files."""
    for root in selection.missing_roots:
        record.add("source_missing", "error", f"source path {root} does not exist", root)
    for path, reason in selection.unreadable_dirs:
        record.add("unreadable", "error", f"{path} cannot be read: {reason}", path)
    for path, what in selection.skipped_special:
        record.add("special_file_skipped", "warning", f"{path} is a {what}: restic backs up no such file, so it is "
                   "not in the backup (it is named in the manifest)", path)


@dataclass
class _Stored:
    """What a backup stored in the repository and kept beside it: undone unless the job's record names it -- data
    without its manifest, or a pair no record names, is no backup, and left behind it would only be listed, kept by
    retention and refused as a base, forever."""

    snapshot_ids: list[str]
    kept_manifest: str | None = None  # the agent's copy of the manifest, the next incremental's base

    def undo(self, restic: Restic, pending: PendingStdinBackup, record: RecordDraft[BackupDraft]) -> None:
        """Forget the snapshots, remove the copy and make the (failed) record name none of it; never raises (what
        made it undo must be what is reported)."""
        # A manifest's restic still waiting on its stdin holds a lock, and `forget` needs the repository alone.
        # What fails here is logged: what made the job undo is what its record reports.
        try:
            pending.abandon()
        except Exception:
            log.exception("could not stop the manifest's restic in %s", restic.repository.name)
        try:
            restic.forget_quietly(self.snapshot_ids)
        except Exception:
            log.exception("could not forget %s in %s", self.snapshot_ids, restic.repository.name)
        if self.kept_manifest is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.kept_manifest)
        record.details.snapshot = None
        record.details.manifest = None


def _store(
    job: _TargetBackup, data: _DataBackup, pending: PendingStdinBackup, written: _Written,
    account: snapshot_proof.SnapshotAccount, read_since_base: ReadSinceBase,
) -> catalog.StoredBackup | None:
    """Once restic ended: store the manifest in its own snapshot, prove the data's snapshot against it, name what
    changed while they ran. None (the data's snapshot forgotten) when the manifest could not be stored; whatever
    fails before the record names both snapshots, they are forgotten and the error raised."""
    run = data.result()
    stored = _Stored([run.summary.snapshot_id])
    try:
        _report_selection(job.selection, job.record)
        backup = _name_in_record(job, run, pending, written, account, read_since_base, stored)
    except BaseException:
        stored.undo(job.restic, pending, job.record)
        raise
    if backup is None:
        stored.undo(job.restic, pending, job.record)
    return backup


def _name_in_record(
    job: _TargetBackup, run: BackupRun, pending: PendingStdinBackup, written: _Written,
    account: snapshot_proof.SnapshotAccount, read_since_base: ReadSinceBase, stored: _Stored,
) -> catalog.StoredBackup | None:
    """:func:`_store`'s work: each snapshot and the kept manifest go into ``stored`` as soon as they exist. None
    when the manifest could not be stored (the record says why)."""
    restic, target, decision, base_id, record = job.restic, job.target, job.decision, job.base_id, job.record
    config, policy, state = job.context.config, job.context.policy, job.context.state
    manifest_path = job.manifest_path
    try:
        snapshot_id, tree, snapshot_time = restic.identify(run)
        with record.phase("manifest"), open(manifest_path, "rb") as content:
            manifest_run = pending.store(content)
            stored.snapshot_ids.append(manifest_run.summary.snapshot_id)
            manifest_id = restic.identify(manifest_run)[0]
    except ResticError as error:
        record.add("manifest_store_failed", "error", error.describe())
        return None
    unreadable, totals, digest = written.manifest.unreadable, written.writer.totals, written.writer.digest
    unprovable = job.selection.unprovable | {u["path"] for u in unreadable}
    stored.kept_manifest = state.manifest_path(snapshot_id)
    os.replace(manifest_path, stored.kept_manifest)  # the next incremental's base, kept here
    stored_manifest = manifest_store.StoredEntries(stored.kept_manifest)
    proof = snapshot_proof.prove(account, stored_manifest, unprovable, expected=written.listed)
    changed = read_since_base.find_changed(stored_manifest)
    record.details.snapshot = SnapshotRef(id=snapshot_id, time=snapshot_time, tree=tree)
    record.details.restic = ResticInfo(version=str(restic.version), summary=run.summary.as_record())

    # What restic could not read is not in the snapshot, though the manifest may list it.
    named = {u["path"] for u in unreadable}
    for item in unreadable:
        record.add("unreadable", "error", f"{item['path']} could not be read: {item['error']}", item["path"])
    for said in run.errors:
        if said.item and said.item not in named:
            record.add("unreadable", "error", f"restic could not read {said.item}: {said.message}", said.item)
    if run.partial and not (unreadable or run.errors):
        record.add("restic_partial", "error", "restic reported that some source data could not be read")
    for path in proof.appeared:
        record.add("changed_during_backup", "warning", f"{path} appeared while it was being backed up: it is in "
                   "the snapshot, not in the manifest", path)
    for path in proof.vanished:
        if path not in changed:
            record.add("changed_during_backup", "warning", f"{path} is in the manifest, not in the snapshot: it "
                       "changed or went away while it was being backed up", path)
    for path in changed:
        record.add("changed_during_backup", "warning", f"{path} changed while it was being backed up", path)
    record.details.changed_during_backup = sorted({*changed, *proof.appeared, *proof.vanished})
    counts = written.counts
    manifest_path_in_snapshot = "/" + _manifest_name(target)
    record.details.manifest = FilesManifestInfo(
        digest=digest, path=manifest_path_in_snapshot, algorithm=target.hash, files=totals.files, bytes=totals.bytes,
        entries=totals.entries, hashed_files=counts.hashed_files, hashed_bytes=counts.hashed_bytes,
        reused_hashes=counts.reused, unreadable=len(unreadable), size=written.writer.size, snapshot_id=manifest_id)
    log.info(
        "%s/%s: %s snapshot %s, %d files, manifest %s in %s",
        policy.name, target.name, decision.level.value, snapshot_id[:12], totals.files, digest[:19], manifest_id[:12],
    )
    return catalog.StoredBackup(
        job_id=record.job_id,
        host=config.host,
        policy=policy.name,
        target=target.name,
        level=decision.level,
        snapshot_id=snapshot_id,
        time=snapshot_time,
        base=base_id,
        manifest_path=manifest_path_in_snapshot,
        manifest_digest=digest,
        tree=tree,
        manifest_snapshot_id=manifest_id,
    )
