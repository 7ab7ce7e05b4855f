"""Evidence bundles verify offline, and each kind of tampering is caught and named."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agents.contract import signing
from drill.evidence.verify import verify_bundle
from tests.support.components import find_restic
from tests.support.drills import drillctl, make_estate


@dataclass
class Bundles:
    root: str
    first: str  # a drill's bundle
    second: str  # another drill's bundle from the same ledger
    coordinator: str


@pytest.fixture(scope="module")
def bundles() -> Iterator[Bundles]:
    root = tempfile.mkdtemp(prefix="drill-evidence-")
    scratch = tempfile.mkdtemp(prefix="drill-scratch-", dir="/tmp")
    os.chmod(scratch, 0o755)
    try:
        estate = make_estate(root, find_restic("0.14"), scratch)
        paths = []
        for site in ("same-city", "local"):
            run = drillctl("drill", "run", "-c", estate.drill_config, "--site", site, "--json", check=True)
            drill_id = json.loads(run.stdout)["drill_id"]
            path = os.path.join(root, f"{site}.zip")
            drillctl("evidence", "export", "-c", estate.drill_config, "--drill", drill_id, "--out", path, check=True)
            paths.append(path)
        keys = json.loads(drillctl("keys", "list", "-c", estate.drill_config, "--json", check=True).stdout)
        coordinator = next(k["keyid"] for k in keys if k["role"] == "coordinator")
        yield Bundles(root, paths[0], paths[1], coordinator)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _members(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _tampered(bundles: Bundles, change: Callable[[dict[str, bytes]], None]) -> str:
    members = _members(bundles.first)
    change(members)
    out = tempfile.mktemp(suffix=".zip", dir=bundles.root)
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out


def _codes(path: str, bundles: Bundles) -> set[str]:
    result = verify_bundle(path, [bundles.coordinator])
    assert not result.intact
    return {p.code for p in result.problems}


def _record(members: dict[str, bytes], kind: str) -> str:
    return next(name for name in sorted(members) if name.startswith("records/") and name.endswith(f"-{kind}.dsse.json"))


def test_intact_bundles_verify_and_the_cli_says_so(bundles: Bundles) -> None:
    for path in (bundles.first, bundles.second):
        result = verify_bundle(path, [bundles.coordinator])
        assert result.intact, result.problems
    unpinned = drillctl("evidence", "verify", bundles.first)
    assert unpinned.returncode == 0 and "not pinned" in unpinned.stdout
    other = signing.generate_key().keyid
    wrong_pin = drillctl("evidence", "verify", bundles.first, "--trust", other, "--json")
    assert wrong_pin.returncode == 1
    assert "untrusted_coordinator" in {p["code"] for p in json.loads(wrong_pin.stdout)["problems"]}


def test_a_field_edited_in_a_record_is_caught(bundles: Bundles) -> None:
    def edit(members: dict[str, bytes]) -> None:
        name = _record(members, "drill.step")
        envelope = json.loads(members[name])
        step = json.loads(base64.b64decode(envelope["payload"]))
        step["rto_seconds"] = 1.0
        envelope["payload"] = base64.b64encode(json.dumps(step).encode()).decode()
        members[name] = json.dumps(envelope).encode()

    assert {"record_altered", "record_signature"} <= _codes(_tampered(bundles, edit), bundles)


def test_a_removed_record_is_caught(bundles: Bundles) -> None:
    def remove(members: dict[str, bytes]) -> None:
        del members[_record(members, "verify")]

    assert "record_missing" in _codes(_tampered(bundles, remove), bundles)


def test_two_swapped_records_are_caught(bundles: Bundles) -> None:
    def swap(members: dict[str, bytes]) -> None:
        a, b = _record(members, "verify"), _record(members, "drill.step")
        members[a], members[b] = members[b], members[a]

    assert "record_altered" in _codes(_tampered(bundles, swap), bundles)


def test_a_record_replayed_from_another_drill_is_caught(bundles: Bundles) -> None:
    other = _members(bundles.second)

    def replay(members: dict[str, bytes]) -> None:
        members[_record(members, "verify")] = other[_record(other, "verify")]

    codes = _codes(_tampered(bundles, replay), bundles)
    assert {"record_from_other_drill", "record_altered"} <= codes


def test_a_swapped_public_key_is_caught(bundles: Bundles) -> None:
    def swap_key(members: dict[str, bytes]) -> None:
        name = next(n for n in members if n.startswith("keys/app01-"))
        members[name] = signing.public_pem(signing.generate_key().public).encode()

    assert {"key_swapped", "record_signature"} <= _codes(_tampered(bundles, swap_key), bundles)


def test_a_checkpoint_re_signed_by_an_unknown_key_is_caught(bundles: Bundles) -> None:
    def resign(members: dict[str, bytes]) -> None:
        checkpoint = signing.envelope_payload(json.loads(members["checkpoint.dsse.json"]))
        forged = signing.generate_key().sign_document(checkpoint, "application/vnd.drill.checkpoint+json")
        members["checkpoint.dsse.json"] = json.dumps(forged).encode()

    assert "checkpoint_signature" in _codes(_tampered(bundles, resign), bundles)


def test_report_figures_changed_are_caught(bundles: Bundles) -> None:
    def change(members: dict[str, bytes]) -> None:
        page = members["report.en.html"].decode()
        marker = '"rpo_seconds": '
        start = page.index(marker) + len(marker)
        end = page.index(",", start)
        members["report.en.html"] = (page[:start] + "60.0" + page[end:]).encode()

    assert {"report_altered", "report_figures"} <= _codes(_tampered(bundles, change), bundles)


def test_corrupted_bundles_are_refused_without_a_crash(bundles: Bundles) -> None:
    not_zip = os.path.join(bundles.root, "not.zip")
    with open(not_zip, "wb") as handle:
        handle.write(b"this is not a bundle")
    truncated = os.path.join(bundles.root, "truncated.zip")
    with open(bundles.first, "rb") as source, open(truncated, "wb") as handle:
        data = source.read()
        handle.write(data[: len(data) // 2])
    bomb = os.path.join(bundles.root, "bomb.zip")
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("records/huge.dsse.json", b"\0" * (100 << 20))
    escaping = os.path.join(bundles.root, "escape.zip")
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../../etc/evil", b"x")
    for path, words in ((not_zip, "not a ZIP"), (truncated, "not a ZIP"), (bomb, "more than"),
                        (escaping, "outside the bundle")):
        run = drillctl("evidence", "verify", path, "--json")
        assert run.returncode == 1, run.stderr
        [problem] = json.loads(run.stdout)["problems"]
        assert problem["code"] == "unreadable" and words in problem["message"], problem


def test_export_leaves_nothing_behind_when_it_cannot_write(bundles: Bundles) -> None:
    out = os.path.join(bundles.root, "no-such-dir", "b.zip")
    config = os.path.join(bundles.root, "drill.yaml")
    failed = drillctl("evidence", "export", "-c", config, "--since", "2000-01-01", "--out", out)
    assert failed.returncode == 2 and "cannot write" in failed.stderr
    empty = drillctl("evidence", "export", "-c", config, "--since", "2999-01-01",
                     "--out", os.path.join(bundles.root, "empty.zip"))
    assert empty.returncode == 2 and "no record" in empty.stderr
    assert not [n for n in os.listdir(bundles.root) if n.startswith(".bundle-") or n == "empty.zip"]


def test_a_record_verifies_by_hand_with_openssl_as_the_bundle_readme_says(bundles: Bundles, tmp_path: str) -> None:
    members = _members(bundles.first)
    assert b"openssl pkeyutl -verify" in members["README.txt"]
    envelope = json.loads(members[_record(members, "verify")])
    payload = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"]
    pae = f"DSSEv1 {len(kind)} {kind} {len(payload)} ".encode() + payload
    keyid = envelope["signatures"][0]["keyid"]
    key = next(content for name, content in members.items() if name.startswith("keys/app01-"))
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=key, capture_output=True,
                         check=True).stdout
    assert "sha256:" + hashlib.sha256(der[-32:]).hexdigest() == keyid
    folder = str(tmp_path)
    for name, content in (("pae.bin", pae), ("sig.bin", base64.b64decode(envelope["signatures"][0]["sig"])),
                          ("key.pem", key)):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(content)
    checked = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin", "-in",
                              "pae.bin", "-sigfile", "sig.bin"], cwd=folder, capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout


def test_an_auditor_verifies_without_a_database_driver(bundles: Bundles) -> None:
    """The offline verifier imports no database driver: an auditor's machine needs none."""
    script = ("import sys\n"
              "sys.modules['psycopg'] = sys.modules['pymysql'] = None  # importing either now fails\n"
              "from drill.evidence.verify import verify_bundle\n"
              f"result = verify_bundle({bundles.first!r}, [{bundles.coordinator!r}])\n"
              "print(result.intact, result.records)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "True" and int(result.stdout.split()[1]) > 0


# -- every member covered by the signed manifest; hostile manifests named, never a crash ----------------------------

def _write(bundles: Bundles, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> str:
    out = tempfile.mktemp(suffix=".zip", dir=bundles.root)
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members:
            archive.writestr(name, content)
    return out


def _manifest(members: dict[str, bytes]) -> dict[str, Any]:
    payload: dict[str, Any] = signing.envelope_payload(json.loads(members["bundle.dsse.json"]))
    return payload


def _resigned(bundles: Bundles, change: Callable[[dict[str, Any]], None],
              key: signing.SigningKey | None = None) -> tuple[str, str]:
    """The first bundle with its manifest changed and signed again -- by ``key``, or by a fresh key whose public
    key is put in the bundle -- and the fingerprint to trust."""
    members = _members(bundles.first)
    manifest = _manifest(members)
    if key is None:
        key = signing.generate_key()
        members[f"keys/fresh-{key.keyid[7:23]}.pem"] = signing.public_pem(key.public).encode()
    change(manifest)
    members["bundle.dsse.json"] = json.dumps(key.sign_document(manifest, "application/vnd.drill.bundle+json")).encode()
    return _write(bundles, list(members.items())), key.keyid


def test_every_member_is_listed_with_its_digest_in_the_signed_manifest(bundles: Bundles) -> None:
    members = _members(bundles.first)
    manifest = _manifest(members)
    assert manifest["schema"] == "drill.bundle/v2"
    assert set(manifest["files"]) == set(members) - {"bundle.dsse.json"}
    assert manifest["files"]["README.txt"] == "sha256:" + hashlib.sha256(members["README.txt"]).hexdigest()
    with zipfile.ZipFile(bundles.first) as archive:  # written as regular files: unzip makes no links of them
        assert all(stat.S_ISREG(info.external_attr >> 16) for info in archive.infolist())


def test_a_rewritten_readme_is_caught(bundles: Bundles) -> None:
    def rewrite(members: dict[str, bytes]) -> None:
        members["README.txt"] = members["README.txt"].replace(b"--trust COORDINATOR-FINGERPRINT",
                                                              b"--trust sha256:" + b"0" * 64)

    path = _tampered(bundles, rewrite)
    assert "member_altered" in _codes(path, bundles)
    run = drillctl("evidence", "verify", path, "--trust", bundles.coordinator)
    assert run.returncode == 1 and "member_altered: README.txt" in run.stdout, run.stdout


def test_a_readme_replaced_by_a_symlink_member_is_caught(bundles: Bundles) -> None:
    members = _members(bundles.first)
    link = zipfile.ZipInfo("README.txt")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = _write(bundles, [(link if name == "README.txt" else name, b"/etc/passwd" if name == "README.txt"
                             else content) for name, content in members.items()])
    result = verify_bundle(path, [bundles.coordinator])
    assert not result.intact
    [unsafe] = [p for p in result.problems if p.code == "unsafe_member"]
    assert "README.txt" in unsafe.message and "symbolic link" in unsafe.message
    directory = _write(bundles, [*members.items(), ("keys/", b"")])
    assert "unsafe_member" in _codes(directory, bundles)


def test_an_unlisted_member_is_caught(bundles: Bundles) -> None:
    def add(members: dict[str, bytes]) -> None:
        members["keys/extra.pem"] = signing.public_pem(signing.generate_key().public).encode()
        members["notes.txt"] = b"trust me"

    result = verify_bundle(_tampered(bundles, add), [bundles.coordinator])
    unexpected = sorted(p.message.split()[0] for p in result.problems if p.code == "unexpected_member")
    assert unexpected == ["keys/extra.pem", "notes.txt"], result.problems


def _no_entries_list(manifest: dict[str, Any]) -> None:
    manifest["entries"] = {"0": manifest["entries"][0]}


def _entry_without_file(manifest: dict[str, Any]) -> None:
    del manifest["entries"][0]["file"]


def _proof_a_string(manifest: dict[str, Any]) -> None:
    manifest["entries"][0]["proof"] = "sha256:" + "0" * 64


def _tree_size_a_string(manifest: dict[str, Any]) -> None:
    manifest["checkpoint"]["tree_size"] = str(manifest["checkpoint"]["tree_size"])


def _key_without_owner(manifest: dict[str, Any]) -> None:
    del manifest["keys"][0]["owner"]


@pytest.mark.parametrize(("change", "field"), [
    (_no_entries_list, "entries"), (_entry_without_file, "entries.0.file"), (_proof_a_string, "entries.0.proof"),
    (_tree_size_a_string, "checkpoint.tree_size"), (_key_without_owner, "keys.0.owner")])
def test_a_malformed_manifest_field_is_named_not_a_crash(bundles: Bundles, change: Callable[[dict[str, Any]], None],
                                                        field: str) -> None:
    path, fresh = _resigned(bundles, change)
    result = verify_bundle(path, [fresh])
    assert not result.intact and result.coordinator == fresh
    [malformed] = [p for p in result.problems if p.code == "manifest_malformed"]
    assert f"{field}:" in malformed.message, malformed
    run = drillctl("evidence", "verify", path, "--trust", fresh, "--json")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "manifest_malformed" in {p["code"] for p in json.loads(run.stdout)["problems"]}


def test_a_v1_bundle_is_reported_outdated_not_intact(bundles: Bundles) -> None:
    """A bundle from before the files table verifies as far as it goes, and says its README is not covered."""
    def downgrade(manifest: dict[str, Any]) -> None:
        manifest["schema"] = "drill.bundle/v1"
        del manifest["files"]

    coordinator = signing.load_key(os.path.join(bundles.root, "coordinator", "keys"))
    assert coordinator is not None and coordinator.keyid == bundles.coordinator
    path, _ = _resigned(bundles, downgrade, coordinator)
    result = verify_bundle(path, [bundles.coordinator])
    assert [p.code for p in result.problems] == ["manifest_outdated"], result.problems
    assert "README" in result.problems[0].message and result.records > 0
    run = drillctl("evidence", "verify", path, "--trust", bundles.coordinator)
    assert run.returncode == 1 and "manifest_outdated" in run.stdout
