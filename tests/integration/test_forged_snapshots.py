"""Verification is anchored in signed backup records, not in what the repository says about itself.

Anyone holding the repository password can write a snapshot with drill's tags and a manifest that matches
altered data -- here a second agent with the same host name and its own key does exactly that. The honest agent
verifies only snapshots its own signed records (or the ledger's) name: the forged one given by id fails with
``unrecorded_snapshot``; ``--latest`` verifies the honest one and names the forged one in a warning. Damage the
rotating check part did not read is a failed backup when the restore meets it, not a "could not verify".
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import yaml

from agents.restic.runner import Restic
from policies.levels import Level
from tests.support.configs import Workspace, write_files
from tests.support.jobs import backup


def _verify(path: str, *extra: str) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run([sys.executable, "-m", "agents.cli", "verify", "--config", path, "--repository", "local",
                             "--target", "documents", "--json", *extra], capture_output=True, text=True, check=False)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _findings(document: dict[str, object]) -> list[tuple[str, str, str | None]]:
    return [(f["code"], f["severity"], f.get("subject")) for f in document["findings"]]  # type: ignore[attr-defined]


def test_a_snapshot_written_by_another_key_is_not_verified(workspace: Workspace) -> None:
    write_files(workspace.data, {"ledger.csv": "id,amount\n1,100\n", "notes.txt": "honest"})
    honest_path = workspace.write_config({"local": workspace.local_repository("local")})
    honest = workspace.load(honest_path)
    Restic(honest.restic_binary, honest.repositories["local"]).init()
    [recorded] = backup(honest, "nightly", Level.FULL)
    assert recorded.outcome == "success" and recorded.snapshot is not None

    # Someone with the repository password: same host name, own state directory and key, altered data.
    forged_data = os.path.join(workspace.root, "forged")
    write_files(forged_data, {"ledger.csv": "id,amount\n1,999999\n", "notes.txt": "forged"})
    with open(honest_path) as handle:
        document = yaml.safe_load(handle)
    document.update(state_dir=os.path.join(workspace.root, "intruder-state"),
                    targets={"documents": {"kind": "files", "paths": [forged_data]}})
    intruder_path = os.path.join(workspace.root, "intruder.yaml")
    with open(intruder_path, "w") as handle:
        yaml.safe_dump(document, handle)
    [forged] = backup(workspace.load(intruder_path), "nightly", Level.FULL)
    assert forged.outcome == "success" and forged.snapshot is not None  # a complete, well-tagged snapshot

    code, [refused] = _verify(honest_path, "--snapshot", forged.snapshot.id)
    assert code == 1 and refused["verdict"] == "failed"
    assert ("unrecorded_snapshot", "error", forged.snapshot.id) in _findings(refused)
    assert refused["compared"]["files"] == 0  # type: ignore[index]  # it was never restored
    assert refused["check"]["passed"] is True  # type: ignore[index]  # checked beside the listing all the same

    code, [latest] = _verify(honest_path, "--latest")
    assert code == 0, latest["findings"]
    assert latest["verdict"] == "passed"
    assert latest["snapshot"]["id"] == recorded.snapshot.id  # type: ignore[index]
    assert latest["manifest"]["record_id"] == recorded.record_id  # type: ignore[index]
    assert _findings(latest) == [("unrecorded_snapshot", "warning", forged.snapshot.id)]


def _flip_a_byte(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_damage_the_check_part_did_not_read_fails_the_restore_as_damage(workspace: Workspace) -> None:
    write_files(workspace.data, {f"f{i}.bin": os.urandom(200_000) for i in range(8)})
    path = workspace.write_config({"local": workspace.local_repository("local")})
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    backup(config, "nightly", Level.FULL)
    packs = sorted(glob.glob(os.path.join(workspace.root, "repo-local", "data", "*", "*")), key=os.path.getsize)
    _flip_a_byte(packs[-1])
    # restic's check part n/256 reads the packs whose id starts with byte n-1: move the cursor so that the next
    # part is another one, and the restore is the first to meet the damage.
    first_byte = int(os.path.basename(packs[-1])[:2], 16)
    os.makedirs(os.path.join(workspace.state_dir, "verify"), exist_ok=True)
    with open(os.path.join(workspace.state_dir, "verify", "local.cursor"), "w") as handle:
        handle.write(str(first_byte + 1))
    code, [document] = _verify(path, "--latest", "--read-data-parts", "256")
    assert document["check"]["passed"] is True  # type: ignore[index]
    assert code == 1 and document["verdict"] == "failed"
    [damage] = [f for f in document["findings"] if f["code"] == "repository_damaged"]  # type: ignore[attr-defined]
    assert "ciphertext verification failed" in damage["message"]
    assert not any(f["code"] == "could_not_verify" for f in document["findings"])  # type: ignore[attr-defined]
