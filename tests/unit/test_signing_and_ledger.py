"""Signed envelopes, the Merkle tree and the ledger's refusals (SQLite; PostgreSQL in the integration tier)."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from agents.contract import signing
from drill import merkle
from drill.ledger.ledger import AlreadyPresent, Ledger, Refused
from drill.ledger.store import StoreError, open_store
from tests.support.records import backup_document, drill_started, drill_step


@pytest.mark.parametrize("algorithm", ["sha256", "sm3"])
def test_every_leaf_has_a_proof_that_fails_anywhere_else(algorithm: str) -> None:
    for size in range(1, 20):
        leaves = [merkle.leaf_hash(algorithm, f"entry {i}".encode()) for i in range(size)]
        root = merkle.root(algorithm, leaves)
        for index in range(size):
            proof = merkle.inclusion_proof(algorithm, index, leaves)
            assert merkle.verify_inclusion(algorithm, index, size, leaves[index], proof, root)
            if size > 1:
                assert not merkle.verify_inclusion(algorithm, (index + 1) % size, size, leaves[index], proof, root)
            assert not merkle.verify_inclusion(algorithm, index, size, merkle.leaf_hash(algorithm, b"x"), proof, root)


def test_rfc6962_leaf_and_node_hashes_differ_and_the_empty_tree() -> None:
    # RFC 6962 test vector: the root of the empty tree is SHA-256 of nothing.
    assert merkle.root("sha256", []).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    leaf = merkle.leaf_hash("sha256", b"")
    assert leaf.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.node_hash("sha256", leaf, leaf) != merkle.leaf_hash("sha256", leaf + leaf)


def test_an_envelope_verifies_and_names_what_is_wrong() -> None:
    key = signing.generate_key("sm3")
    envelope = key.sign_document({"record_id": "r1", "outcome": "success"})
    assert key.keyid.startswith("sm3:")
    opened = signing.open_envelope(envelope, {key.keyid: key.public})
    assert opened.document() == {"record_id": "r1", "outcome": "success"}
    changed = dict(envelope, payload=base64.b64encode(b'{"outcome":"failed","record_id":"r1"}').decode())
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.open_envelope(changed, {key.keyid: key.public})
    with pytest.raises(signing.SignatureError, match="unknown key"):
        signing.open_envelope(envelope, {})
    with pytest.raises(signing.SignatureError, match="lacks"):
        signing.open_envelope({"payload": "x"}, {key.keyid: key.public})


def _ledger(tmp_path: pathlib.Path) -> Ledger:
    return Ledger(open_store(str(tmp_path / "ledger.db")), signing.generate_key(), "coordinator")


def test_the_ledger_appends_checkpoints_and_refuses(tmp_path: pathlib.Path) -> None:
    ledger = _ledger(tmp_path)
    agent = signing.generate_key()
    envelope = agent.sign_document(backup_document("r1"))
    with pytest.raises(Refused) as stranger:
        ledger.append(envelope)
    assert stranger.value.code == "unknown_key"
    ledger.add_key(signing.public_pem(agent.public), "app01", "agent")
    entry = ledger.append(envelope)
    assert (entry.index, entry.kind, entry.host) == (0, "backup", "app01")
    with pytest.raises(AlreadyPresent):
        ledger.append(envelope)
    with pytest.raises(Refused) as replay:
        ledger.append(agent.sign_document(backup_document("r1", outcome="failed")))
    assert replay.value.code == "replay"
    forged = dict(envelope, payload=base64.b64encode(json.dumps(backup_document("r2")).encode()).decode())
    with pytest.raises(Refused) as bad:
        ledger.append(forged)
    assert bad.value.code == "bad_signature"
    with pytest.raises(Refused) as malformed:  # signed, but not a record: wrong type in a field
        ledger.append(agent.sign_document(backup_document("r3", outcome=7)))
    assert malformed.value.code == "malformed" and "outcome" in str(malformed.value)
    ledger.append_signed(drill_started("D", "d1"))
    checkpoint = signing.open_envelope(ledger.checkpoint(), {ledger.coordinator.keyid: ledger.coordinator.public})
    head = checkpoint.document()
    assert head["tree_size"] == 2
    _, root = merkle.from_text(head["root"])
    for item in ledger.entries():
        proof = [merkle.from_text(p)[1] for p in ledger.inclusion_proof(item.index, 2)]
        assert merkle.verify_inclusion("sha256", item.index, 2, merkle.from_text(item.leaf_hash)[1], proof, root)
    assert [e.kind for e in ledger.entries_of_drill("D")] == ["drill.started"]
    assert ledger.audit() == []


def test_an_entry_edited_in_the_database_is_found_by_audit(tmp_path: pathlib.Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.append_signed(drill_started("D", "d1", site="x"))
    envelope = ledger.entries()[0].envelope
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["site"] = "elsewhere"
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    ledger.store.execute("UPDATE ledger_entries SET envelope = %s WHERE idx = 0", (json.dumps(envelope),))
    problems = ledger.audit()
    assert ("entry_altered", "entry 0: its content no longer matches its leaf hash") in [
        (p.code, p.message) for p in problems]
    assert any(p.code == "bad_signature" and "does not verify" in p.message for p in problems)


def test_a_ledger_url_it_cannot_use_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="unknown ledger URL scheme 'mysql'"):
        open_store("mysql://somewhere/db")
    with pytest.raises(StoreError, match="cannot open the PostgreSQL ledger"):
        open_store("postgresql://nobody@127.0.0.1:1/none")


def test_an_sm3_ledger_hashes_and_proves_with_sm3(tmp_path: pathlib.Path) -> None:
    ledger = Ledger(open_store(f"sqlite:///{tmp_path}/sm3.db"), signing.generate_key("sm3"))
    for number in range(3):
        ledger.append_signed(drill_step("D", f"d{number}"))
    head = signing.envelope_payload(ledger.checkpoint())
    assert head["algorithm"] == "sm3" and head["root"].startswith("sm3:")
    assert ledger.coordinator.keyid.startswith("sm3:")
    _, root = merkle.from_text(head["root"])
    entry = ledger.entries()[1]
    proof = [merkle.from_text(p)[1] for p in ledger.inclusion_proof(1, 3)]
    assert merkle.verify_inclusion("sm3", 1, 3, merkle.from_text(entry.leaf_hash)[1], proof, root)
    with pytest.raises(Refused, match="hashes with sm3"):
        Ledger(open_store(f"sqlite:///{tmp_path}/sm3.db"), signing.generate_key("sha256"))
