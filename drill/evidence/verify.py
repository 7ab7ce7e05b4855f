"""Verifying an evidence bundle offline: nothing but the file (and, ideally, the coordinator's fingerprint).

Checks, each failure a :class:`Problem` with a code and plain words:

1. the file is a ZIP within sane limits (member count and sizes, no paths
   leaving the bundle, no compression bombs);
2. the manifest is signed by the coordinator key -- the pinned one when
   ``--trust`` is given -- and every key file matches its fingerprint;
3. the checkpoint is signed by that same coordinator and its key set is the
   bundle's key set;
4. every record listed is present, hashes to its leaf, is included in the
   checkpoint's tree at its index, is signed by a known key, and belongs to the
   bundle's drill; no record appears twice; no file is unlisted;
5. a drill bundle holds every record its ``drill.finished`` names;
6. each report's digest matches, and its figures follow from the records.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.contract import signing
from agents.contract.documents import DocumentError
from agents.contract.records import DrillFinished, DrillStarted, DrillStep, Record, parse_record
from drill import merkle
from drill.evidence import layout
from drill.ledger.entries import KeyInfo, keys_digest
from drill.reports.figures import drill_figures
from drill.reports.html import embedded_figures
from drill.reports.i18n import duration
from targets import hashing


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


@dataclass
class Verification:
    problems: list[Problem] = field(default_factory=list)
    coordinator: str | None = None
    pinned: bool = False
    records: int = 0
    scope: dict[str, Any] = field(default_factory=dict)

    def add(self, code: str, message: str) -> None:
        self.problems.append(Problem(code, message))

    @property
    def intact(self) -> bool:
        return not self.problems


class _Unreadable(Exception):
    pass


def _read_members(path: str) -> dict[str, bytes]:
    """Every member of the bundle, within the limits. Raises :class:`_Unreadable`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(layout.MAX_BUNDLE_BYTES + 1)
    except OSError as error:
        raise _Unreadable(f"cannot read {path}: {error.strerror}") from error
    if len(data) > layout.MAX_BUNDLE_BYTES:
        raise _Unreadable(f"the bundle is larger than {layout.MAX_BUNDLE_BYTES >> 20} MiB")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise _Unreadable(f"not a ZIP file (or truncated): {error}") from error
    infos = archive.infolist()
    if len(infos) > layout.MAX_MEMBERS:
        raise _Unreadable(f"the bundle has {len(infos)} members, more than {layout.MAX_MEMBERS}")
    total = 0
    members = {}
    for info in infos:
        name = info.filename
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise _Unreadable(f"member {name!r} points outside the bundle")
        if info.file_size > layout.MAX_MEMBER_BYTES:
            raise _Unreadable(f"member {name!r} is {info.file_size} bytes, more than {layout.MAX_MEMBER_BYTES}")
        if info.file_size > 1 << 20 and info.file_size > layout.MAX_RATIO * max(1, info.compress_size):
            raise _Unreadable(f"member {name!r} expands {info.file_size // max(1, info.compress_size)}-fold")
        total += info.file_size
        if total > layout.MAX_TOTAL_BYTES:
            raise _Unreadable(f"the bundle expands to more than {layout.MAX_TOTAL_BYTES >> 20} MiB")
        if name in members:
            raise _Unreadable(f"member {name!r} appears twice")
        try:
            with archive.open(info) as member:
                content = member.read(layout.MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise _Unreadable(f"member {name!r} cannot be read: {error}") from error
        if len(content) != info.file_size:
            raise _Unreadable(f"member {name!r} is not the size the ZIP directory says")
        members[name] = content
    return members


def _json(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name])
    except KeyError:
        raise _Unreadable(f"the bundle lacks {name}") from None
    except ValueError as error:
        raise _Unreadable(f"{name} is not JSON: {error}") from error


def verify_bundle(path: str, trusted: Sequence[str] = ()) -> Verification:
    """Verify the bundle at ``path``; ``trusted``: coordinator key fingerprints the auditor pins."""
    result = Verification()
    try:
        members = _read_members(path)
        _verify(members, trusted, result)
    except _Unreadable as error:
        result.add("unreadable", str(error))
    return result


def _bundle_keys(members: dict[str, bytes], algorithm: str, result: Verification) -> dict[str, Any]:
    keys = {}
    for name, content in members.items():
        if name.startswith("keys/"):
            try:
                public = signing.load_public_pem(content)
            except signing.SignatureError as error:
                result.add("bad_key", f"{name}: {error}")
                continue
            for digest in signing.DIGESTS:  # a record names its key by the signer's digest
                keys[signing.key_id(public, digest)] = public
    return keys


def _verify(members: dict[str, bytes], trusted: Sequence[str], result: Verification) -> None:
    envelope = _json(members, layout.MANIFEST)
    try:
        payload_type, payload, signatures = signing.parse_envelope(envelope)
        manifest = json.loads(payload)
    except (signing.SignatureError, ValueError) as error:
        raise _Unreadable(f"{layout.MANIFEST}: {error}") from error
    algorithm = str(manifest.get("algorithm", "sha256"))
    if algorithm not in signing.DIGESTS:
        raise _Unreadable(f"unknown digest algorithm {algorithm!r}")
    keys = _bundle_keys(members, algorithm, result)
    signer = signatures[0][0]
    result.coordinator = signer
    result.scope = manifest.get("scope") or {}
    if trusted:
        result.pinned = True
        if signer not in trusted:
            result.add("untrusted_coordinator", f"the bundle is signed by key {signer}, not by the trusted "
                                                f"coordinator {', '.join(trusted)}")
    try:
        signing.open_envelope(envelope, {signer: keys[signer]} if signer in keys else {})
    except signing.SignatureError as error:
        result.add("manifest_signature", f"the bundle's manifest: {error}")
        return
    if payload_type != layout.BUNDLE_TYPE or manifest.get("schema") != layout.SCHEMA:
        result.add("manifest_type", "the signed manifest is not a drill bundle manifest")
        return
    if manifest.get("coordinator") != signer:
        result.add("manifest_signer", f"the manifest names coordinator {manifest.get('coordinator')}, "
                                      f"but {signer} signed it")
    listed_keys = _check_keys(members, manifest, keys, algorithm, result)
    root, size = _check_checkpoint(members, manifest, signer, keys, listed_keys, algorithm, result)
    documents = _check_records(members, manifest, keys, algorithm, root, size, result)
    _check_unlisted(members, manifest, result)
    if "drill_id" in result.scope:
        _check_drill(manifest, documents, result)
        _check_reports(members, manifest, documents, algorithm, result)


def _check_keys(members: dict[str, bytes], manifest: dict[str, Any], keys: dict[str, Any], algorithm: str,
                result: Verification) -> list[KeyInfo]:
    listed = []
    for key in manifest.get("keys", []):
        content = members.get(key["file"])
        if content is None:
            result.add("key_missing", f"key file {key['file']} ({key['owner']}) is missing")
            continue
        try:
            actual = signing.key_id(signing.load_public_pem(content), algorithm)
        except signing.SignatureError as error:
            result.add("bad_key", f"{key['file']}: {error}")
            continue
        if actual != key["keyid"]:
            result.add("key_swapped", f"{key['file']} ({key['owner']}) has fingerprint {actual}, the signed "
                                      f"manifest says {key['keyid']}: the key was replaced")
        listed.append(KeyInfo(key["keyid"], content.decode(), key["owner"], key["role"]))
    return listed


def _check_checkpoint(members: dict[str, bytes], manifest: dict[str, Any], signer: str, keys: dict[str, Any],
                      listed: list[KeyInfo], algorithm: str, result: Verification) -> tuple[bytes, int]:
    envelope = _json(members, layout.CHECKPOINT)
    try:
        opened = signing.open_envelope(envelope, {signer: keys[signer]})
        checkpoint = opened.document()
    except signing.SignatureError as error:
        result.add("checkpoint_signature", f"the checkpoint is not signed by the coordinator {signer}: {error}")
        return b"", 0
    size = int(checkpoint.get("tree_size", -1))
    if size != manifest["checkpoint"]["tree_size"]:
        result.add("checkpoint_mismatch", f"the checkpoint covers {size} records, the manifest says "
                                          f"{manifest['checkpoint']['tree_size']}")
    if checkpoint.get("keys_digest") != keys_digest(algorithm, listed):
        result.add("keys_changed", "the bundle's keys are not the key set the checkpoint signed")
    try:
        _, root = merkle.from_text(str(checkpoint.get("root", "")))
    except ValueError as error:
        result.add("checkpoint_mismatch", str(error))
        return b"", size
    return root, size


def _check_records(members: dict[str, bytes], manifest: dict[str, Any], keys: dict[str, Any], algorithm: str,
                   root: bytes, size: int, result: Verification) -> list[Record]:
    documents: list[Record] = []
    seen: set[str] = set()
    scope_drill = result.scope.get("drill_id")
    for item in manifest.get("entries", []):
        name = item["file"]
        content = members.get(name)
        if content is None:
            result.add("record_missing", f"record {item['record_id']} ({name}) was removed from the bundle")
            continue
        try:
            envelope = json.loads(content)
        except ValueError:
            result.add("record_unreadable", f"{name} is not JSON")
            continue
        leaf = merkle.leaf_hash(algorithm, signing.canonical_json(envelope))
        if merkle.to_text(algorithm, leaf) != item["leaf_hash"]:
            result.add("record_altered", f"{name} is not the record the manifest lists at index {item['index']} "
                                         "(edited, swapped or replaced)")
        proof = [merkle.from_text(p)[1] for p in item.get("proof", [])]
        if not root or not merkle.verify_inclusion(algorithm, int(item["index"]), size, leaf, proof, root):
            result.add("not_in_ledger", f"{name} is not in the signed checkpoint at index {item['index']}")
        try:
            document = parse_record(signing.open_envelope(envelope, keys).document())
        except signing.SignatureError as error:
            result.add("record_signature", f"{name}: {error}")
            continue
        except DocumentError as error:
            result.add("record_unreadable", f"{name}: {error}")
            continue
        record_id = document.record_id
        if record_id in seen:
            result.add("record_replayed", f"record {record_id} appears twice")
        seen.add(record_id)
        if record_id != item["record_id"]:
            result.add("record_altered", f"{name} holds record {record_id}, the manifest lists {item['record_id']}")
        if scope_drill and document.drill_id != scope_drill:
            result.add("record_from_other_drill", f"{name} belongs to drill {document.drill_id}, "
                                                  f"not to {scope_drill}: a replayed record")
        documents.append(document)
        result.records += 1
    return documents


def _check_unlisted(members: dict[str, bytes], manifest: dict[str, Any], result: Verification) -> None:
    known = {layout.MANIFEST, layout.CHECKPOINT, layout.README}
    known |= {e["file"] for e in manifest.get("entries", [])} | {k["file"] for k in manifest.get("keys", [])}
    known |= {r["file"] for r in manifest.get("reports", [])}
    for name in sorted(set(members) - known):
        result.add("unexpected_member", f"{name} is in the bundle but not in its signed manifest")


def _check_drill(manifest: dict[str, Any], documents: list[Record], result: Verification) -> None:
    finished = next((d for d in documents if isinstance(d, DrillFinished)), None)
    if finished is None:
        result.add("drill_unfinished", "the bundle holds no drill.finished record")
        return
    present = {d.record_id for d in documents}
    for listed in finished.records:
        if listed.record_id not in present:
            result.add("record_missing", f"the drill's {listed.kind} record {listed.record_id} is not in the bundle")


def _check_reports(members: dict[str, bytes], manifest: dict[str, Any], documents: list[Record],
                   algorithm: str, result: Verification) -> None:
    started = next((d for d in documents if isinstance(d, DrillStarted)), None)
    if started is None:
        result.add("drill_unstarted", "the bundle holds no drill.started record")
        return
    steps = [d for d in documents if isinstance(d, DrillStep)]
    finished = next((d for d in documents if isinstance(d, DrillFinished)), None)
    expected = drill_figures(started, steps, finished)
    for report in manifest.get("reports", []):
        content = members.get(report["file"])
        if content is None:
            result.add("report_missing", f"{report['file']} is missing")
            continue
        if hashing.digest_bytes(algorithm, content) != report["digest"]:
            result.add("report_altered", f"{report['file']} is not the report the coordinator signed")
        page = content.decode("utf-8", errors="replace")
        if embedded_figures(page) != expected:
            result.add("report_figures", f"{report['file']}: its figures do not follow from the signed records")
        for row in expected["systems"]:
            for value in (row["rpo_seconds"], row["rto_seconds"]):
                shown = duration(value, report["lang"])
                if shown not in page:
                    result.add("report_figures", f"{report['file']}: {row['system']}/{row['target']} should show "
                                                 f"{shown}")
