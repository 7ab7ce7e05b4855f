"""Evidence bundles mutated by Hypothesis: the verifier never raises, and no change passes as intact.

One small drill bundle is made without restic (a ledger on SQLite, records from
``tests.support.records``, ``export_bundle``); each example changes it -- bytes
flipped, inserted or cut off, members renamed, replaced, removed, added or made
links, manifest fields given values of any type and the manifest re-signed, by
the coordinator itself or by a fresh key the auditor is then told to trust.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agents.contract import signing
from agents.contract.records import DrillFinished, ListedRecord
from drill.evidence import layout
from drill.evidence.export import export_bundle
from drill.evidence.verify import Verification, verify_bundle
from drill.ledger.ledger import CHECKPOINT_TYPE, Ledger
from drill.ledger.store import open_store
from targets import hashing
from tests.support.records import STARTED, backup_document, drill_started, drill_step

# Every code the verifier may give; a typo or an unnamed failure shows up as a code outside this set.
CODES = {
    "unreadable", "unsafe_member", "unexpected_member", "member_missing", "member_altered", "manifest_malformed",
    "manifest_outdated", "manifest_signature", "manifest_type", "manifest_signer", "untrusted_coordinator",
    "bad_key", "key_missing", "key_swapped", "keys_changed", "checkpoint_signature", "checkpoint_malformed",
    "checkpoint_mismatch", "record_missing", "record_unreadable", "record_altered", "record_signature",
    "record_replayed", "record_from_other_drill", "not_in_ledger", "drill_unfinished", "drill_unstarted",
    "report_missing", "report_altered", "report_figures",
}
REGULAR = stat.S_IFREG | 0o644
# No example database: nothing is written into the checkout; a failure prints its example.
EXAMPLES = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True, repr=False)
class Made:
    folder: str
    data: bytes  # the bundle file as exported
    members: dict[str, bytes]
    coordinator: signing.SigningKey

    def __repr__(self) -> str:  # short, for Hypothesis' reports of a failing example
        return f"Made({self.folder!r}, {len(self.data)} bytes, {sorted(self.members)})"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    folder = str(tmp_path_factory.mktemp("fuzz-bundles"))
    coordinator = signing.generate_key()
    ledger = Ledger(open_store(os.path.join(folder, "ledger.db")), coordinator)
    agent = signing.generate_key()
    ledger.add_key(signing.public_pem(agent.public), "app01", "agent")
    ledger.append(agent.sign_document(backup_document("b0")))  # outside the drill: proofs are not trivial
    ledger.append(agent.sign_document(backup_document("b1", drill_id="D")))
    ledger.append_signed(drill_started("D", "d1"))
    ledger.append_signed(drill_step("D", "s1"))
    listed = [ListedRecord(record_id=e.record_id, leaf_hash=e.leaf_hash, kind=e.kind)
              for e in ledger.entries_of_drill("D")]
    ledger.append_signed(DrillFinished.model_validate({
        "record_id": "f1", "job": {"id": "D", "kind": "drill.finished"}, "drill_id": "D", "host": "coordinator",
        "verdict": "failed", "failing": ["app01/documents"], "records": listed, "finished": STARTED,
        "duration_seconds": 1.0}))
    path = os.path.join(folder, "bundle.zip")
    export_bundle(ledger, path, drill_id="D")
    with open(path, "rb") as handle:
        data = handle.read()
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    yield Made(folder, data, members, coordinator)
    ledger.store.close()


def _write(path: str, members: list[tuple[str, bytes, int]]) -> None:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # a duplicate name is one of the mutations
        for name, content, mode in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 30, 2, 0, 0))
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)


def _verify(path: str, trusted: str) -> Verification:
    result = verify_bundle(path, [trusted])  # the property: this never raises
    assert {p.code for p in result.problems} <= CODES, result.problems
    assert all(p.message for p in result.problems)
    return result


def _same_as_exported(made: Made, path: str) -> bool:
    """Whether the file at ``path`` reads (with zipfile) as exactly the exported members, all regular files."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if any(stat.S_IFMT(i.external_attr >> 16) not in (0, stat.S_IFREG) for i in infos):
                return False
            return {i.filename: archive.read(i) for i in infos} == made.members and len(infos) == len(made.members)
    except Exception:  # any failure to read means it is not the exported bundle
        return False


def test_the_bundle_made_here_is_intact(made: Made) -> None:
    path = os.path.join(made.folder, "bundle.zip")
    result = _verify(path, made.coordinator.keyid)
    assert result.intact, result.problems
    assert result.records == 4 and result.scope == {"drill_id": "D"}
    # The verifier checks the checkpoint's payload type by its own copy of the ledger's constant.
    assert layout.CHECKPOINT_TYPE == CHECKPOINT_TYPE
    manifest = signing.envelope_payload(json.loads(made.members[layout.MANIFEST]))
    assert manifest["schema"] == "drill.bundle/v2"
    assert set(manifest["files"]) == set(made.members) - {layout.MANIFEST}


# -- bytes -------------------------------------------------------------------------------------------------------

@EXAMPLES
@given(data=st.data())
def test_damaged_bytes_never_crash_and_never_pass_as_intact(made: Made, data: st.DataObject) -> None:
    damaged = bytearray(made.data)
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        what = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        at = data.draw(st.integers(0, len(damaged) - 1), label="at")
        if what == "flip":
            damaged[at] ^= data.draw(st.integers(1, 255), label="xor")
        elif what == "insert":
            damaged[at:at] = data.draw(st.binary(min_size=1, max_size=64), label="inserted")
        else:
            del damaged[at:]
            if not damaged:
                break
    assume(bytes(damaged) != made.data)
    path = os.path.join(made.folder, "damaged.zip")
    with open(path, "wb") as handle:
        handle.write(damaged)
    result = _verify(path, made.coordinator.keyid)
    if result.intact:  # only a change the ZIP format does not carry into any member (a date, a comment)
        assert _same_as_exported(made, path), "a changed bundle verified as intact"


# -- members -----------------------------------------------------------------------------------------------------

NAMES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
MODES = st.sampled_from([stat.S_IFLNK | 0o777, stat.S_IFDIR | 0o755, stat.S_IFIFO | 0o644, stat.S_IFCHR | 0o644])


@EXAMPLES
@given(data=st.data())
def test_every_changed_member_is_named(made: Made, data: st.DataObject) -> None:
    members = [(name, content, REGULAR) for name, content in sorted(made.members.items())]
    names = [name for name, _, _ in members]
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        what = data.draw(st.sampled_from(["remove", "rename", "replace", "truncate", "copy", "add", "mode"]))
        position = data.draw(st.integers(0, len(members) - 1), label="member") if members else 0
        if what == "add" or not members:
            members.append((data.draw(st.one_of(NAMES, st.sampled_from(names))),
                            data.draw(st.binary(max_size=200)), REGULAR))
            continue
        name, content, mode = members[position]
        if what == "remove":
            del members[position]
        elif what == "rename":
            members[position] = (data.draw(st.one_of(NAMES, st.sampled_from(names))), content, mode)
        elif what == "replace":
            members[position] = (name, data.draw(st.binary(max_size=300)), mode)
        elif what == "truncate":
            members[position] = (name, content[:data.draw(st.integers(0, max(0, len(content) - 1)))], mode)
        elif what == "copy":
            members[position] = (name, made.members[data.draw(st.sampled_from(names))], mode)
        else:
            members[position] = (name, content, data.draw(MODES))
    changed = sorted(members) != sorted((n, c, REGULAR) for n, c in made.members.items())
    assume(changed)
    path = os.path.join(made.folder, "members.zip")
    _write(path, members)
    result = _verify(path, made.coordinator.keyid)
    assert not result.intact, "a bundle with changed members verified as intact"


# -- manifest fields ---------------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4),
                    max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document (containers included), as a path of keys and indexes."""
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _values(value: Any) -> Iterator[Any]:
    """Every value in a JSON document: a field set to another field's value confuses more than noise does."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item)


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _still_the_same_bundle(path: tuple[Any, ...], value: Any) -> bool:
    """Whether the coordinator, re-signing with this change, still vouches for this very bundle.

    ``created`` and the time range of the scope are what the coordinator says of the bundle, not of
    its content; whatever it signs there stands (or is malformed, which is fine too).
    """
    if path in (("created",), ("scope", "since"), ("scope", "until")):
        return True
    return path == ("scope",) and isinstance(value, dict) and value.get("drill_id") == "D"


@EXAMPLES
@given(data=st.data())
def test_manifest_fields_of_any_type_are_named_problems(made: Made, data: st.DataObject) -> None:
    manifest = signing.envelope_payload(json.loads(made.members[layout.MANIFEST]))
    members = dict(made.members)
    by_fresh_key = data.draw(st.booleans(), label="re-signed by a fresh key")
    signer = made.coordinator
    harmless = not by_fresh_key  # the checkpoint is the coordinator's: a fresh key's manifest never passes
    if by_fresh_key:  # an attacker's key, listed in the bundle as well as they can
        signer = signing.generate_key()
        name = f"keys/fresh-{signer.keyid[7:23]}.pem"
        members[name] = signing.public_pem(signer.public).encode()
        manifest["files"][name] = hashing.digest_bytes(manifest["algorithm"], members[name])
        manifest["keys"].append({"keyid": signer.keyid, "owner": "coordinator", "role": "coordinator",
                                 "file": name})
        manifest["coordinator"] = signer.keyid
    path = data.draw(st.sampled_from(list(_paths(manifest))), label="path")
    value = data.draw(st.one_of(JSON, st.sampled_from(list(_values(manifest))[1:])), label="value")
    assume(json.dumps(value, sort_keys=True) != json.dumps(_get(manifest, path), sort_keys=True))
    harmless = harmless and _still_the_same_bundle(path, value)
    _set(manifest, path, json.loads(json.dumps(value)))  # a copy: the value may be a part of the manifest itself
    members[layout.MANIFEST] = signing.canonical_json(signer.sign_document(manifest, layout.BUNDLE_TYPE))
    path_out = os.path.join(made.folder, "manifest.zip")
    _write(path_out, [(name, content, REGULAR) for name, content in sorted(members.items())])
    result = _verify(path_out, signer.keyid)
    if not harmless:
        assert not result.intact, "a bundle whose signed manifest was changed verified as intact"


@EXAMPLES
@given(payload=st.one_of(JSON, st.binary(max_size=100)))
def test_a_manifest_payload_that_is_not_a_manifest_is_named(made: Made, payload: Any) -> None:
    members = dict(made.members)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = made.coordinator.private.sign(signing.pae(layout.BUNDLE_TYPE, raw))
    members[layout.MANIFEST] = json.dumps({
        "payloadType": layout.BUNDLE_TYPE, "payload": base64.b64encode(raw).decode(),
        "signatures": [{"keyid": made.coordinator.keyid, "sig": base64.b64encode(signature).decode()}]}).encode()
    path = os.path.join(made.folder, "payload.zip")
    _write(path, [(name, content, REGULAR) for name, content in sorted(members.items())])
    result = _verify(path, made.coordinator.keyid)
    assert not result.intact
    assert "manifest_malformed" in {p.code for p in result.problems}


# -- records -----------------------------------------------------------------------------------------------------

def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


@EXAMPLES
@given(data=st.data())
def test_drill_records_of_any_content_signed_by_the_coordinator_are_named(made: Made, data: st.DataObject) -> None:
    """A record re-signed by its own signer still differs from the one the manifest lists, whatever it holds."""
    members = dict(made.members)
    name = data.draw(st.sampled_from(sorted(n for n in members if n.startswith("records/") and "drill." in n)))
    record = signing.envelope_payload(json.loads(members[name]))
    if data.draw(st.booleans(), label="add a field"):
        # named like another field of the document: extra fields are kept, and may shadow known ones
        objects = [p for p in [(), *_paths(record)] if isinstance(_get(record, p), dict)]
        path = (*data.draw(st.sampled_from(objects), label="object"),
                data.draw(st.one_of(st.sampled_from(sorted(set(_keys(record)))), st.text(max_size=10))))
    else:
        path = data.draw(st.sampled_from(list(_paths(record))), label="path")
    value = data.draw(st.one_of(JSON, st.sampled_from(list(_values(record))[1:])), label="value")
    old = json.dumps(_get(record, path), sort_keys=True) if _has(record, path) else None
    assume(json.dumps(value, sort_keys=True) != old)
    _set(record, path, json.loads(json.dumps(value)))
    members[name] = signing.canonical_json(made.coordinator.sign_document(record))
    out = os.path.join(made.folder, "record.zip")
    _write(out, [(n, content, REGULAR) for n, content in sorted(members.items())])
    assert not _verify(out, made.coordinator.keyid).intact


def _has(document: Any, path: tuple[Any, ...]) -> bool:
    try:
        _get(document, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def test_a_step_whose_compared_counts_shadow_its_figures_is_named(made: Made) -> None:
    """A drill.step signed by the coordinator, ``compared`` holding a field named like a figure: a problem, no crash."""
    members = dict(made.members)
    name = next(n for n in members if n.endswith("-drill.step.dsse.json"))
    step = signing.envelope_payload(json.loads(members[name]))
    step["compared"]["verdict"] = "passed"
    members[name] = signing.canonical_json(made.coordinator.sign_document(step))
    out = os.path.join(made.folder, "shadow.zip")
    _write(out, [(n, content, REGULAR) for n, content in sorted(members.items())])
    codes = {p.code for p in _verify(out, made.coordinator.keyid).problems}
    assert "record_altered" in codes  # and the figures are computed from the typed counts alone: no crash
