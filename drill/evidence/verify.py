"""Verifying an evidence bundle offline: nothing but the file (and, ideally, the coordinator's fingerprint).

Checks, each failure a :class:`Problem` with a code and plain words:

1. the file is a ZIP within sane limits (member count and sizes, no paths
   leaving the bundle, no compression bombs) -- else ``unreadable``, and
   nothing more is read; every member is a regular file, not a link or a
   directory (``unsafe_member``);
2. the manifest is signed by the coordinator key -- the pinned one when
   ``--trust`` is given -- and reads as a bundle manifest
   (``manifest_malformed`` naming the fields otherwise; ``manifest_outdated``
   for a ``drill.bundle/v1`` one, which does not cover the README);
3. every member but the manifest is listed in its ``files`` table with its
   digest: none unlisted (``unexpected_member``), missing (``member_missing``)
   or changed (``member_altered``, or the code of what it is:
   ``record_altered``, ``key_swapped``, ``report_altered``...);
4. every key file matches its fingerprint; the checkpoint is signed by that
   same coordinator, reads as a checkpoint (``checkpoint_malformed``) and its
   key set is the bundle's key set;
5. every record listed is present, hashes to its leaf, is included in the
   checkpoint's tree at its index, is signed by a known key, is the record,
   kind and drill the manifest says; no record appears twice;
6. a drill bundle holds every record its ``drill.finished`` names;
7. a drill bundle has its report in every language; each report's digest
   matches, and its figures follow from the records.

Every field of the manifest and the checkpoint is read through the typed models
of :mod:`drill.evidence.layout`; whatever a hostile file holds ends as problems,
never as an exception.
"""

from __future__ import annotations

import io
import json
import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing
from agents.contract.documents import DocumentError, validate
from agents.contract.records import DrillFinished, DrillStarted, DrillStep, Record, parse_record
from drill import merkle
from drill.evidence import layout
from drill.ledger.entries import KeyInfo, keys_digest
from drill.reports.figures import drill_figures
from drill.reports.html import embedded_figures
from drill.reports.i18n import LANGUAGES, duration
from targets import hashing

# What Python's zipfile raises on a damaged or hostile archive: besides BadZipFile, the errors of the
# decompressors (zlib.error, LZMAError, OSError from bz2), NotImplementedError for an unknown compression
# method, RuntimeError for an encrypted member, ValueError for a bad UTF-8 name, struct.error for short
# headers, EOFError for a member cut short.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, OSError, EOFError,
               NotImplementedError, RuntimeError, ValueError, struct.error)

# What reading a hostile JSON document raises: bad syntax or UTF-8 (ValueError), or nesting deeper than the
# interpreter's recursion limit (RecursionError).
_JSON_ERRORS = (ValueError, RecursionError)

# What reading a hostile key or envelope raises: cryptography's UnsupportedAlgorithm is not a ValueError.
_KEY_ERRORS = (signing.SignatureError, UnsupportedAlgorithm)


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
    # (code, member) pairs already reported: two checks that see the same fault in one member say it once.
    _said: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, code: str, message: str) -> None:
        self.problems.append(Problem(code, message))

    def add_for(self, member: str, code: str, message: str) -> None:
        """Add a problem of ``member``, unless one with this code was already added for it."""
        if (code, member) not in self._said:
            self._said.add((code, member))
            self.add(code, message)

    @property
    def intact(self) -> bool:
        return not self.problems


class _Unreadable(Exception):
    pass


@dataclass
class _Bundle:
    """The members of a bundle: the regular files' contents, and every name (unsafe members included)."""

    contents: dict[str, bytes] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    unsafe: set[str] = field(default_factory=set)


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why ``info`` is not a plain file (a link, a directory, a device...), or None when it is one.

    The file type is in the high 16 bits of the external attributes (Unix mode). A type of 0 says
    nothing -- as Python's ``writestr`` and most Windows tools write -- and unzip extracts such a
    member as a regular file, so it passes.
    """
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if info.filename.endswith("/") or info.external_attr & 0x10 or stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return f"is not a regular file (mode {mode:o})"
    return None


def _read_members(path: str, result: Verification) -> _Bundle:
    """Every member of the bundle, within the limits; unsafe ones named, not read. Raises :class:`_Unreadable`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(layout.MAX_BUNDLE_BYTES + 1)
    except OSError as error:
        raise _Unreadable(f"cannot read {path}: {error.strerror}") from error
    if len(data) > layout.MAX_BUNDLE_BYTES:
        raise _Unreadable(f"the bundle is larger than {layout.MAX_BUNDLE_BYTES >> 20} MiB")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as error:
        raise _Unreadable(f"not a ZIP file (or truncated): {error}") from error
    infos = archive.infolist()
    if len(infos) > layout.MAX_MEMBERS:
        raise _Unreadable(f"the bundle has {len(infos)} members, more than {layout.MAX_MEMBERS}")
    total = 0
    bundle = _Bundle()
    for info in infos:
        name = info.filename
        if name.startswith("/") or ".." in name.split("/") or "\\" in name or "\0" in name:
            raise _Unreadable(f"member {name!r} points outside the bundle")
        if info.file_size > layout.MAX_MEMBER_BYTES:
            raise _Unreadable(f"member {name!r} is {info.file_size} bytes, more than {layout.MAX_MEMBER_BYTES}")
        if info.file_size > 1 << 20 and info.file_size > layout.MAX_RATIO * max(1, info.compress_size):
            raise _Unreadable(f"member {name!r} expands {info.file_size // max(1, info.compress_size)}-fold")
        total += info.file_size
        if total > layout.MAX_TOTAL_BYTES:
            raise _Unreadable(f"the bundle expands to more than {layout.MAX_TOTAL_BYTES >> 20} MiB")
        if name in bundle.names:
            raise _Unreadable(f"member {name!r} appears twice")
        bundle.names.add(name)
        why = _unsafe(info)
        if why is not None:
            # Never read, never trusted: extracted by an auditor's unzip it could point anywhere.
            result.add("unsafe_member", f"member {name!r} {why}: a bundle holds regular files only")
            bundle.unsafe.add(name)
            continue
        try:
            with archive.open(info) as member:
                content = member.read(layout.MAX_MEMBER_BYTES + 1)
        except _ZIP_ERRORS as error:
            raise _Unreadable(f"member {name!r} cannot be read: {error}") from error
        if len(content) != info.file_size:
            raise _Unreadable(f"member {name!r} is not the size the ZIP directory says")
        bundle.contents[name] = content
    return bundle


def verify_bundle(path: str, trusted: Sequence[str] = ()) -> Verification:
    """Verify the bundle at ``path``; ``trusted``: coordinator key fingerprints the auditor pins.

    Returns the :class:`Verification`, intact or with every problem found. Raises nothing: a file
    that cannot be read, or holds anything hostile, is a problem of the result.
    """
    result = Verification()
    try:
        bundle = _read_members(path, result)
        _verify(bundle, trusted, result)
    except _Unreadable as error:
        result.add("unreadable", str(error))
    return result


def _load_key(content: bytes) -> Ed25519PublicKey:
    """The Ed25519 key of a PEM member. Raises :class:`signing.SignatureError` for anything else."""
    try:
        return signing.load_public_pem(content)
    except UnsupportedAlgorithm as error:  # a PEM of a key type this build of OpenSSL cannot load
        raise signing.MalformedEnvelope(f"not a PEM public key: {error}") from None


def _bundle_keys(bundle: _Bundle, result: Verification) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for name, content in sorted(bundle.contents.items()):
        if name.startswith("keys/"):
            try:
                public = _load_key(content)
            except signing.SignatureError as error:
                result.add_for(name, "bad_key", f"{name}: {error}")
                continue
            for digest in signing.DIGESTS:  # a record names its key by the signer's digest
                keys[signing.key_id(public, digest)] = public
    return keys


def _open_manifest(bundle: _Bundle, trusted: Sequence[str],
                   result: Verification) -> tuple[layout.BundleManifest | None, str, dict[str, Ed25519PublicKey]]:
    """The manifest, its signer and the bundle's keys; the manifest is None when nothing more can be checked."""
    content = bundle.contents.get(layout.MANIFEST)
    if content is None:
        if layout.MANIFEST in bundle.unsafe:
            return None, "", {}
        raise _Unreadable(f"the bundle lacks {layout.MANIFEST}")
    keys = _bundle_keys(bundle, result)
    try:
        envelope = json.loads(content)
        payload_type, payload, signatures = signing.parse_envelope(envelope)
    except (signing.SignatureError, *_JSON_ERRORS) as error:
        result.add("manifest_malformed", f"{layout.MANIFEST} is not a signed envelope: {error}")
        return None, "", keys
    signer = signatures[0][0]
    result.coordinator = signer
    if trusted:
        result.pinned = True
        if signer not in trusted:
            result.add("untrusted_coordinator", f"the bundle is signed by key {signer}, not by the trusted "
                                                f"coordinator {', '.join(trusted)}")
    try:
        signing.open_envelope(envelope, {signer: keys[signer]} if signer in keys else {})
    except signing.SignatureError as error:
        result.add("manifest_signature", f"the bundle's manifest: {error}")
        return None, signer, keys
    if payload_type != layout.BUNDLE_TYPE:
        result.add("manifest_type", f"the signed manifest is a {payload_type[:80]!r}, not a drill bundle manifest")
        return None, signer, keys
    try:
        manifest = validate(layout.BundleManifest, json.loads(payload), layout.MANIFEST)
    except DocumentError as error:
        result.add("manifest_malformed", str(error))
        return None, signer, keys
    except _JSON_ERRORS as error:
        result.add("manifest_malformed", f"{layout.MANIFEST}: the signed payload is not JSON: {error}")
        return None, signer, keys
    return manifest, signer, keys


def _verify(bundle: _Bundle, trusted: Sequence[str], result: Verification) -> None:
    manifest, signer, keys = _open_manifest(bundle, trusted, result)
    if manifest is None:
        if signer in keys:  # the checkpoint needs nothing of the manifest: check it as far as it goes
            _check_checkpoint(bundle, None, signer, keys, None, result)
        return
    result.scope = manifest.scope.model_dump(mode="json", include={"drill_id", "since", "until"}, exclude_none=True)
    if manifest.coordinator != signer:
        result.add("manifest_signer", f"the manifest names coordinator {manifest.coordinator}, "
                                      f"but {signer} signed it")
    if manifest.files is None:
        result.add("manifest_outdated", f"the manifest is {layout.SCHEMA_V1}: its README and members are not "
                                        "covered by the signature (export the bundle again)")
    listed_keys = _check_keys(bundle, manifest, result)
    root, size = _check_checkpoint(bundle, manifest, signer, keys, listed_keys, result)
    documents = _check_records(bundle, manifest, keys, root, size, result)
    if manifest.scope.drill_id is not None:
        _check_drill(documents, result)
        _check_reports(bundle, manifest, documents, result)
    _check_files(bundle, manifest, result)


def _check_files(bundle: _Bundle, manifest: layout.BundleManifest, result: Verification) -> None:
    """Every member against the manifest's files table (v2), or against its listings (v1)."""
    specific: dict[str, tuple[str, str]] = {manifest.checkpoint.file: ("member_missing", "member_altered")}
    specific |= {e.file: ("record_missing", "record_altered") for e in manifest.entries}
    specific |= {k.file: ("key_missing", "key_swapped") for k in manifest.keys}
    specific |= {r.file: ("report_missing", "report_altered") for r in manifest.reports}
    if manifest.files is None:  # v1: no digests to check; only what is listed may be there
        known = {layout.MANIFEST, layout.README, *specific}
    else:
        known = {layout.MANIFEST, *manifest.files}
        for name in sorted({layout.README, *specific} - set(manifest.files)):
            result.add("manifest_malformed", f"{name} is listed in the manifest, but its files table does not "
                                             "cover it")
        for name, digest in sorted(manifest.files.items()):
            if name in bundle.unsafe:
                continue  # already named
            missing, altered = specific.get(name, ("member_missing", "member_altered"))
            content = bundle.contents.get(name)
            if content is None:
                result.add_for(name, missing, f"{name} is in the signed manifest but not in the bundle")
            elif hashing.digest_bytes(manifest.algorithm, content) != digest:
                result.add_for(name, altered, f"{name} is not the file the coordinator signed (its digest "
                                              "differs)")
    for name in sorted(bundle.names - known):
        result.add_for(name, "unexpected_member", f"{_shown(name)} is in the bundle but not in its signed manifest")


def _shown(name: str) -> str:
    """A member's name as printed: quoted when it holds anything but printable characters (which could forge
    lines of the output on the auditor's terminal)."""
    return name if name.isprintable() else repr(name)


def _check_keys(bundle: _Bundle, manifest: layout.BundleManifest, result: Verification) -> list[KeyInfo]:
    listed = []
    for key in manifest.keys:
        if key.file in bundle.unsafe:
            continue
        content = bundle.contents.get(key.file)
        if content is None:
            result.add_for(key.file, "key_missing", f"key file {key.file} ({key.owner}) is missing")
            continue
        try:
            actual = signing.key_id(_load_key(content), manifest.algorithm)
            pem = content.decode("ascii")
        except signing.SignatureError as error:
            result.add_for(key.file, "bad_key", f"{key.file}: {error}")
            continue
        except UnicodeDecodeError:
            result.add_for(key.file, "bad_key", f"{key.file}: not an ASCII PEM file")
            continue
        if actual != key.keyid:
            result.add_for(key.file, "key_swapped", f"{key.file} ({key.owner}) has fingerprint {actual}, the "
                                                    f"signed manifest says {key.keyid}: the key was replaced")
        listed.append(KeyInfo(key.keyid, pem, key.owner, key.role))
    return listed


def _check_checkpoint(bundle: _Bundle, manifest: layout.BundleManifest | None, signer: str,
                      keys: dict[str, Ed25519PublicKey], listed: list[KeyInfo] | None,
                      result: Verification) -> tuple[bytes, int]:
    """The checkpoint's root and size (b"", 0 when it cannot be used); ``manifest`` None: check it alone."""
    name = manifest.checkpoint.file if manifest is not None else layout.CHECKPOINT
    if name in bundle.unsafe:
        return b"", 0
    content = bundle.contents.get(name)
    if content is None:
        result.add_for(name, "member_missing", f"the checkpoint {name} is missing")
        return b"", 0
    try:
        opened = signing.open_envelope(json.loads(content), {signer: keys[signer]})
    except _JSON_ERRORS as error:
        result.add("checkpoint_malformed", f"{name} is not JSON: {error}")
        return b"", 0
    except signing.SignatureError as error:
        result.add("checkpoint_signature", f"the checkpoint is not signed by the coordinator {signer}: {error}")
        return b"", 0
    if opened.payload_type != layout.CHECKPOINT_TYPE:
        result.add("checkpoint_malformed", f"{name} is a {opened.payload_type[:80]!r}, not a ledger checkpoint")
        return b"", 0
    try:
        checkpoint = validate(layout.CheckpointBody, opened.document(), name)
    except (DocumentError, signing.SignatureError) as error:
        result.add("checkpoint_malformed", str(error))
        return b"", 0
    except RecursionError as error:
        result.add("checkpoint_malformed", f"{name}: {error}")
        return b"", 0
    if manifest is None or listed is None:
        return b"", 0
    if checkpoint.tree_size != manifest.checkpoint.tree_size:
        result.add("checkpoint_mismatch", f"the checkpoint covers {checkpoint.tree_size} records, the manifest "
                                          f"says {manifest.checkpoint.tree_size}")
    if checkpoint.algorithm != manifest.algorithm:
        result.add("checkpoint_mismatch", f"the checkpoint hashes with {checkpoint.algorithm}, the manifest with "
                                          f"{manifest.algorithm}")
        return b"", checkpoint.tree_size
    if checkpoint.keys_digest != keys_digest(manifest.algorithm, listed):
        result.add("keys_changed", "the bundle's keys are not the key set the checkpoint signed")
    return merkle.from_text(checkpoint.root)[1], checkpoint.tree_size


def _open_record(envelope: Any, keys: dict[str, Ed25519PublicKey], name: str,
                 result: Verification) -> Record | None:
    try:
        return parse_record(signing.open_envelope(envelope, keys).document())
    except signing.SignatureError as error:
        result.add("record_signature", f"{name}: {error}")
    except DocumentError as error:
        result.add("record_unreadable", f"{name}: {error}")
    except RecursionError:
        result.add("record_unreadable", f"{name}: the signed record is nested too deeply")
    return None


def _check_records(bundle: _Bundle, manifest: layout.BundleManifest, keys: dict[str, Ed25519PublicKey],
                   root: bytes, size: int, result: Verification) -> list[Record]:
    documents: list[Record] = []
    seen: set[str] = set()
    algorithm = manifest.algorithm
    scope_drill = manifest.scope.drill_id
    for item in manifest.entries:
        name = item.file
        if name in bundle.unsafe:
            continue
        content = bundle.contents.get(name)
        if content is None:
            result.add_for(name, "record_missing", f"record {item.record_id} ({name}) was removed from the bundle")
            continue
        try:
            envelope = json.loads(content)
            leaf = merkle.leaf_hash(algorithm, signing.canonical_json(envelope))
        except _JSON_ERRORS:
            result.add_for(name, "record_unreadable", f"{name} is not JSON")
            continue
        if merkle.to_text(algorithm, leaf) != item.leaf_hash:
            result.add_for(name, "record_altered", f"{name} is not the record the manifest lists at index "
                                                   f"{item.index} (edited, swapped or replaced)")
        proof = [merkle.from_text(p)[1] for p in item.proof]
        if not root or not merkle.verify_inclusion(algorithm, item.index, size, leaf, proof, root):
            result.add_for(name, "not_in_ledger", f"{name} is not in the signed checkpoint at index {item.index}")
        document = _open_record(envelope, keys, name, result)
        if document is None:
            continue
        record_id = document.record_id
        if record_id in seen:
            result.add("record_replayed", f"record {record_id} appears twice")
        seen.add(record_id)
        if (record_id, document.kind, document.drill_id) != (item.record_id, item.kind, item.drill_id):
            result.add_for(name, "record_altered", f"{name} holds {document.kind} record {record_id} of drill "
                                                   f"{document.drill_id}, the manifest lists {item.kind} record "
                                                   f"{item.record_id} of drill {item.drill_id}")
        if scope_drill is not None and document.drill_id != scope_drill:
            result.add("record_from_other_drill", f"{name} belongs to drill {document.drill_id}, "
                                                  f"not to {scope_drill}: a replayed record")
        documents.append(document)
        result.records += 1
    return documents


def _check_drill(documents: list[Record], result: Verification) -> None:
    finished = next((d for d in documents if isinstance(d, DrillFinished)), None)
    if finished is None:
        result.add("drill_unfinished", "the bundle holds no drill.finished record")
        return
    present = {d.record_id for d in documents}
    for listed in finished.records:
        if listed.record_id not in present:
            result.add("record_missing", f"the drill's {listed.kind} record {listed.record_id} is not in the bundle")


def _check_reports(bundle: _Bundle, manifest: layout.BundleManifest, documents: list[Record],
                   result: Verification) -> None:
    started = next((d for d in documents if isinstance(d, DrillStarted)), None)
    if started is None:
        result.add("drill_unstarted", "the bundle holds no drill.started record")
        return
    steps = [d for d in documents if isinstance(d, DrillStep)]
    finished = next((d for d in documents if isinstance(d, DrillFinished)), None)
    try:
        expected = drill_figures(started, steps, finished)
    except TypeError as error:
        # drill_figures merges a step's ``compared`` (extra fields kept) into the row it builds: a signed step
        # whose ``compared`` has a field named like one of the row's makes that merge fail.
        result.add("report_figures", f"the drill's figures cannot be computed from its signed records: {error}")
        return
    for lang in sorted(set(LANGUAGES) - {r.lang for r in manifest.reports}):  # a drill's bundle has them all
        result.add_for(layout.report_name(lang), "report_missing", f"the drill's {lang} report is not in the "
                                                                   "signed manifest")
    for report in manifest.reports:
        if report.file in bundle.unsafe:
            continue
        content = bundle.contents.get(report.file)
        if content is None:
            result.add_for(report.file, "report_missing", f"{report.file} is missing")
            continue
        if hashing.digest_bytes(manifest.algorithm, content) != report.digest:
            result.add_for(report.file, "report_altered", f"{report.file} is not the report the coordinator "
                                                          "signed")
        page = content.decode("utf-8", errors="replace")
        try:
            embedded = embedded_figures(page)
        except RecursionError:  # figures nested deeper than any report writes them
            embedded = None
        if embedded != expected:
            result.add_for(report.file, "report_figures", f"{report.file}: its figures do not follow from the "
                                                          "signed records")
        for row in expected["systems"]:
            for value in (row["rpo_seconds"], row["rto_seconds"]):
                shown = duration(value, report.lang)
                if shown not in page:
                    result.add("report_figures", f"{report.file}: {row['system']}/{row['target']} should show "
                                                 f"{shown}")

