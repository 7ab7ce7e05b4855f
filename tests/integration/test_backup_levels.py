"""Backups at each level on real restic (both versions), local and S3 repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from agents.jobs import catalog
from agents.jobs.snapshot_proof import comparable_path
from agents.repositories import open_record_store
from agents.restic.runner import Restic
from agents.state import StateDir
from policies.levels import Level
from targets import hashing
from targets.files.manifest_store import parse_manifest
from tests.support.components import S3Server, running_s3
from tests.support.configs import Workspace, write_files
from tests.support.jobs import backup, doc


def _listing(workspace: Workspace, config_path: str, repository: str) -> list[catalog.StoredBackup]:
    config = workspace.load(config_path)
    restic = Restic(config.restic_binary, config.repositories[repository])
    return catalog.collect_backups(restic.snapshots(), host=config.host)


def test_full_differential_incremental_with_manifests_in_the_repository(workspace: Workspace) -> None:
    write_files(workspace.data, {f"dir{i % 3}/f{i}.txt": f"content {i}\n" * 50 for i in range(30)})
    write_files(workspace.data, {"skip.tmp": "excluded"})
    # Names that are not UTF-8: restic prints each odd byte as U+FFFD ("\xe2\x82" is two of them), and the proof
    # must name them as restic does, or they would look changed.
    for odd in (b"odd\xe2\x82name", b"odd\xff"):
        with open(os.path.join(os.fsencode(workspace.data), odd), "wb") as handle:
            handle.write(b"a name that is not UTF-8\n")
    path = workspace.write_config({"local": workspace.local_repository("local")})
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()

    [full] = backup(config, "nightly", Level.FULL)
    write_files(workspace.data, {"dir0/f0.txt": "changed for the differential\n"})
    [diff] = backup(config, "nightly", Level.DIFFERENTIAL)
    write_files(workspace.data, {"dir1/f1.txt": "changed for the incremental\n", "new.txt": "new"})
    [incr] = backup(config, "nightly", Level.INCREMENTAL)

    docs = [doc(r) for r in (full, diff, incr)]
    assert [d["outcome"] for d in docs] == ["success"] * 3, docs
    assert [d["level"]["effective"] for d in docs] == ["full", "differential", "incremental"]
    assert docs[0]["manifest"]["hashed_files"] == 32 and docs[0]["manifest"]["reused_hashes"] == 0
    assert (docs[1]["manifest"]["hashed_files"], docs[1]["manifest"]["reused_hashes"]) == (1, 31)
    assert (docs[2]["manifest"]["hashed_files"], docs[2]["manifest"]["reused_hashes"]) == (2, 31)
    assert [d["changed_during_backup"] for d in docs] == [[], [], []]
    assert docs[1]["base_snapshot_id"] == docs[0]["snapshot"]["id"]
    assert docs[2]["base_snapshot_id"] == docs[1]["snapshot"]["id"]
    assert all(len(d["snapshot"]["id"]) == 64 for d in docs)  # full ids, also from restic 0.14

    backups = _listing(workspace, path, "local")
    assert [b.level for b in backups] == [Level.FULL, Level.DIFFERENTIAL, Level.INCREMENTAL]
    assert [b.base for b in backups] == [None, docs[0]["snapshot"]["id"], docs[1]["snapshot"]["id"]]
    # The ids and times in the records are restic's own (0.14 in a local repository: read off its folder, the time
    # given with --time).
    assert [(b.snapshot_id, b.time) for b in backups] == [(r.snapshot.id, r.snapshot.time) for r in (full, diff, incr)]
    # The manifest in the repository is the one the record's digest names, and it lists what restic stored.
    restic = Restic(config.restic_binary, config.repositories["local"])
    latest = backups[2]
    assert latest.snapshot_id == docs[2]["snapshot"]["id"]
    # The manifest is the one file of its own snapshot, which the record names; the data's snapshot lists the roots.
    assert latest.manifest_snapshot_id == docs[2]["manifest"]["snapshot_id"] != latest.snapshot_id
    assert latest.manifest_path == docs[2]["manifest"]["path"] == "/documents.manifest"
    stored = restic.dump(latest.manifest_snapshot_id, latest.manifest_path)
    assert hashing.digest_bytes("sha256", stored) == docs[2]["manifest"]["digest"]
    assert latest.manifest_digest == ""  # not a tag: only the signed record says it
    manifest = parse_manifest(stored)
    assert manifest.job_id == docs[2]["job"]["id"]
    assert not any(e.path.endswith(".tmp") for e in manifest.entries)
    listed = subprocess.run(
        [config.restic_binary, "ls", "--json", latest.snapshot_id],
        env={**os.environ, "RESTIC_REPOSITORY": config.repositories["local"].url,
             "RESTIC_PASSWORD_FILE": workspace.password_file},
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    in_snapshot = {json.loads(line)["path"] for line in listed if '"struct_type":"node"' in line
                   and '"type":"file"' in line}
    # The data's snapshot holds exactly the manifest's files, and its paths are the target's roots.
    assert in_snapshot == {comparable_path(e.path) for e in manifest.entries if e.type == "file"}
    [listing] = [s for s in restic.snapshots() if s.id == latest.snapshot_id]
    assert listing.paths == (workspace.data,)
    assert os.listdir(os.path.join(workspace.state_dir, "staging")) == []  # nothing staged is left
    # The outbox holds one record per job.
    assert len(os.listdir(os.path.join(workspace.state_dir, "outbox"))) == 3


def test_a_base_manifest_is_read_from_the_repository_only_as_the_agents_own_record_vouches(
    workspace: Workspace,
) -> None:
    write_files(workspace.data, {f"f{i}.txt": f"content {i}\n" for i in range(20)})
    config = workspace.load(workspace.write_config({"local": workspace.local_repository("local")}))
    Restic(config.restic_binary, config.repositories["local"]).init()
    [full] = backup(config, "nightly", Level.FULL)
    state = StateDir(config.state_dir)
    assert full.snapshot is not None
    os.unlink(state.manifest_path(full.snapshot.id))  # the local copy gone: the repository's is read
    write_files(workspace.data, {"f0.txt": "changed"})
    [incremental] = backup(config, "nightly", Level.INCREMENTAL)
    counts = doc(incremental)["manifest"]
    assert (counts["hashed_files"], counts["reused_hashes"]) == (1, 19), incremental.findings
    assert incremental.findings == []
    # Without a record of this agent vouching for the base, a manifest from the repository is not trusted (a tag
    # is whatever the repository's password holder wrote): every file is hashed again.
    assert incremental.snapshot is not None
    os.unlink(state.manifest_path(incremental.snapshot.id))
    store = open_record_store(config)
    for path in store.paths(kind="backup"):
        os.unlink(path)
    [again] = backup(config, "nightly", Level.INCREMENTAL)
    counts = doc(again)["manifest"]
    assert (counts["hashed_files"], counts["reused_hashes"]) == (20, 0)
    assert [f.code for f in again.findings] == ["base_manifest_mismatch"] and again.outcome == "success"


def test_incremental_without_a_full_is_upgraded(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    config = workspace.load(workspace.write_config({"local": workspace.local_repository("local")}))
    Restic(config.restic_binary, config.repositories["local"]).init()
    [record] = backup(config, "nightly", Level.INCREMENTAL)
    document = doc(record)
    assert document["outcome"] == "success"
    assert document["level"] == {"requested": "incremental", "effective": "full",
                                 "reason": "upgraded to full: no usable full backup exists"}
    assert any(f["code"] == "level_upgraded" for f in document["findings"])


def test_s3_backup_replicates_to_another_provider_and_proves_the_copy(
    workspace: Workspace, s3: S3Server, tmp_path: str
) -> None:
    """Two S3 servers with their own keys (two providers): restic copy reaches both through rclone remotes."""
    write_files(workspace.data, {f"f{i}": os.urandom(2000) for i in range(20)})
    s3.make_bucket("backups")
    with running_s3(os.path.join(str(tmp_path), "s3-same-city")) as far:
        assert far.access_key != s3.access_key and far.secret_key != s3.secret_key
        far.make_bucket("backups")
        path = workspace.write_config(
            {"local": workspace.s3_repository(s3, "backups", "app01"),
             "same-city": workspace.s3_repository(far, "backups", "app01")},
            policies={"nightly": {"targets": ["documents"], "repository": "local", "replicate_to": ["same-city"],
                                  "retention": {"full": 2}}},
        )
        config = workspace.load(path)
        for repository in config.repositories.values():
            assert Restic(config.restic_binary, repository).init() is True
        records = [backup(config, "nightly", Level.FULL)[0] for _ in range(3)]
        docs = [doc(r) for r in records]
        assert [d["outcome"] for d in docs] == ["success"] * 3, docs[-1]["findings"]
        replication = docs[0]["replication"][0]
        assert replication["verified"] is True and replication["site"] == "same-city"
        assert replication["copied"][0]["same_tree"] is True
        assert replication["copied"][0]["tree"] == docs[0]["snapshot"]["tree"]
        # retention keeps 2 fulls on both sites, and forgot the first one everywhere
        assert docs[2]["retention"]["local"]["forgotten"] == [docs[0]["snapshot"]["id"]]
        for site in ("local", "same-city"):
            backups = _listing(workspace, path, site)
            assert len(backups) == 2 and all(b.manifest_snapshot_id for b in backups)
        far_ids = {b.original for b in _listing(workspace, path, "same-city")}
        assert far_ids == {docs[1]["snapshot"]["id"], docs[2]["snapshot"]["id"]}


def test_retention_never_touches_another_policy_or_host(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    repo = workspace.local_repository("shared")
    policies = {
        "keep-one": {"targets": ["documents"], "repository": "shared", "retention": {"full": 1}, "prune": False},
        "keep-all": {"targets": ["documents"], "repository": "shared"},
    }
    mine = workspace.load(workspace.write_config({"shared": repo}, policies=policies))
    other_host = workspace.load(workspace.write_config({"shared": repo}, policies=policies, host="otherhost",
                                                       name="other.yaml"))
    Restic(mine.restic_binary, mine.repositories["shared"]).init()
    backup(other_host, "keep-one", Level.FULL)
    backup(mine, "keep-all", Level.FULL)
    backup(mine, "keep-one", Level.FULL)
    backup(mine, "keep-one", Level.FULL)
    restic = Restic(mine.restic_binary, mine.repositories["shared"])
    backups = catalog.collect_backups(restic.snapshots())
    owners = sorted((b.host, b.policy) for b in backups)
    assert owners == [("otherhost", "keep-one"), ("testhost", "keep-all"), ("testhost", "keep-one")]


def test_state_keeps_a_local_copy_of_each_manifest(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    config = workspace.load(workspace.write_config({"local": workspace.local_repository("local")}))
    Restic(config.restic_binary, config.repositories["local"]).init()
    [record] = backup(config, "nightly", Level.FULL)
    document = doc(record)
    cached = StateDir(config.state_dir).load_manifest(document["snapshot"]["id"])
    assert cached is not None and hashing.digest_bytes("sha256", cached) == document["manifest"]["digest"]


def test_a_base_forgotten_behind_the_agents_back_rebuilds_its_index(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1", "b": "2"})
    config = workspace.load(workspace.write_config({"local": workspace.local_repository("local")}))
    restic = Restic(config.restic_binary, config.repositories["local"])
    restic.init()
    [full] = backup(config, "nightly", Level.FULL)
    restic.forget([doc(full)["snapshot"]["id"]], prune=False)  # not through the agent
    # restic 0.18 would still find the parent in its cache; a rebuilt host has no cache either.
    shutil.rmtree(os.path.join(config.state_dir, "cache"))
    [again] = backup(config, "nightly", Level.INCREMENTAL)
    document = doc(again)
    assert document["outcome"] == "success", document["findings"]
    # The index no longer names the forgotten full: there is no usable full, so this run is one.
    assert document["level"]["effective"] == "full"
    assert [b.snapshot_id for b in _listing(workspace, workspace.root + "/agent.yaml", "local")] == [
        document["snapshot"]["id"]]
