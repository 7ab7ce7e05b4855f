"""Consistency proofs (RFC 9162 2.1.4), and a ledger that notices deleted and rewritten entries.

The ledger is SQLite in a temporary directory; tampering is done the way an
attacker with the database would do it: SQL on the tables, and where the
attacker also holds the coordinator's key, checkpoints signed with it.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import stat
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.contract import signing
from agents.contract.configfile import ConfigError
from drill import merkle
from drill.config import load_drill_config
from drill.coordinator import open_ledger
from drill.ledger.ledger import (
    CHECKPOINT_TYPE,
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    CheckpointLogError,
    Ledger,
    LedgerTampered,
    read_checkpoint_log,
)
from drill.ledger.store import open_store
from tests.support.records import backup_document, drill_started, drill_step

ALGORITHMS = ["sha256", "sm3"]


def _leaves(algorithm: str, size: int) -> list[bytes]:
    return [merkle.leaf_hash(algorithm, f"entry {i}".encode()) for i in range(size)]


def _flipped(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


# -- consistency proofs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_pair_of_sizes_has_a_proof_that_fails_when_anything_is_changed(algorithm: str) -> None:
    leaves = _leaves(algorithm, 20)
    roots = [merkle.root(algorithm, leaves[:size]) for size in range(21)]
    other = merkle.leaf_hash(algorithm, b"not an entry")
    for new in range(1, 21):
        for old in range(1, new + 1):
            proof = merkle.consistency_proof(algorithm, old, leaves[:new])
            assert merkle.verify_consistency(algorithm, old, new, roots[old], roots[new], proof), (old, new)
            # wrong roots: another tree's, or the two swapped
            assert not merkle.verify_consistency(algorithm, old, new, other, roots[new], proof)
            assert not merkle.verify_consistency(algorithm, old, new, roots[old], other, proof)
            if old < new:
                assert not merkle.verify_consistency(algorithm, old, new, roots[new], roots[old], proof)
                assert not merkle.verify_consistency(algorithm, old, new, roots[old], roots[new - 1], proof)
                assert not merkle.verify_consistency(algorithm, new, old, roots[old], roots[new], proof)
            # a tampered proof: each node flipped, one dropped, one added
            for position in range(len(proof)):
                tampered = [*proof[:position], _flipped(proof[position]), *proof[position + 1:]]
                assert not merkle.verify_consistency(algorithm, old, new, roots[old], roots[new], tampered)
                shorter = proof[:position] + proof[position + 1:]
                assert not merkle.verify_consistency(algorithm, old, new, roots[old], roots[new], shorter)
            assert not merkle.verify_consistency(algorithm, old, new, roots[old], roots[new], [*proof, other])
            # the entries before ``old`` changed: the new tree no longer extends the old one
            changed = [other, *leaves[1:new]]
            assert not merkle.verify_consistency(algorithm, old, new, roots[old], merkle.root(algorithm, changed),
                                                 merkle.consistency_proof(algorithm, old, changed))


def test_the_proofs_of_the_rfc_example_tree() -> None:
    # RFC 9162 2.1.5: seven leaves d0..d6, a..f and j their leaf hashes, g = (a b), h = (c d), i = (e f),
    # k = (g h), l = (i j). PROOF(3) = [c, d, g, l], PROOF(4) = [l], PROOF(6) = [i, j, k].
    a, b, c, d, e, f, j = _leaves("sha256", 7)

    def node(left: bytes, right: bytes) -> bytes:
        return merkle.node_hash("sha256", left, right)

    g, h, i = node(a, b), node(c, d), node(e, f)
    k, ll = node(g, h), node(i, j)
    leaves = [a, b, c, d, e, f, j]
    assert merkle.consistency_proof("sha256", 3, leaves) == [c, d, g, ll]
    assert merkle.consistency_proof("sha256", 4, leaves) == [ll]
    assert merkle.consistency_proof("sha256", 6, leaves) == [i, j, k]
    assert merkle.root("sha256", leaves) == node(k, ll)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_remembered_tree_gives_every_root_and_the_edges(algorithm: str) -> None:
    leaves = _leaves(algorithm, 20)
    tree = merkle.Tree(algorithm, leaves)
    assert [tree.root(size) for size in range(21)] == [merkle.root(algorithm, leaves[:s]) for s in range(21)]
    empty = merkle.root(algorithm, [])
    assert merkle.consistency_proof(algorithm, 0, leaves) == []
    assert merkle.verify_consistency(algorithm, 0, 20, empty, tree.root(20), [])
    assert not merkle.verify_consistency(algorithm, 0, 20, tree.root(1), tree.root(20), [])
    assert merkle.verify_consistency(algorithm, 7, 7, tree.root(7), tree.root(7), [])
    assert not merkle.verify_consistency(algorithm, 7, 7, tree.root(7), tree.root(8), [])
    assert not merkle.verify_consistency(algorithm, 7, 9, tree.root(7), tree.root(9), [])  # an empty proof
    with pytest.raises(ValueError):
        merkle.consistency_proof(algorithm, 21, leaves)
    with pytest.raises(ValueError):
        tree.root(21)


@settings(max_examples=60, deadline=None)
@given(new=st.integers(1, 300), data=st.data())
def test_large_trees_prove_and_refuse_a_flipped_node(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new))
    leaves = _leaves("sha256", new)
    tree = merkle.Tree("sha256", leaves)
    proof = tree.consistency_proof(old, new)
    assert proof == merkle.consistency_proof("sha256", old, leaves)
    assert merkle.verify_consistency("sha256", old, new, tree.root(old), tree.root(new), proof)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        proof[position] = _flipped(proof[position])
        assert not merkle.verify_consistency("sha256", old, new, tree.root(old), tree.root(new), proof)


# -- the ledger ---------------------------------------------------------------------------------------------


@dataclass
class Estate:
    """A ledger on SQLite with an enrolled agent, its keys, and where its checkpoint log is."""

    path: str
    coordinator: signing.SigningKey
    agent: signing.SigningKey
    log: str

    def open(self, *, verify: bool = True, with_log: bool = True) -> Ledger:
        return Ledger(open_store(self.path), self.coordinator, checkpoint_log=self.log if with_log else None,
                      verify=verify)

    def sql(self, statement: str, *params: object) -> None:
        store = open_store(self.path)
        try:
            store.execute(statement, params)
        finally:
            store.close()


def _estate(tmp_path: pathlib.Path, entries: int = 11, algorithm: str = "sha256") -> Estate:
    estate = Estate(str(tmp_path / "ledger.db"), signing.generate_key(algorithm), signing.generate_key(algorithm),
                    str(tmp_path / "checkpoints.jsonl"))
    ledger = estate.open()
    ledger.add_key(signing.public_pem(estate.agent.public), "app01", "agent")
    ledger.append_signed(drill_started("D", "d0"))
    for number in range(1, entries):
        ledger.append(estate.agent.sign_document(backup_document(f"r{number}")))
    ledger.checkpoint()
    ledger.store.close()
    return estate


def _codes(ledger: Ledger, log: str | None = None) -> list[str]:
    return [problem.code for problem in ledger.audit(against=read_checkpoint_log(log) if log else None)]


def _rewrite_entry(estate: Estate, index: int, *, update_leaf: bool, resign: bool = False) -> None:
    """Change what entry ``index`` says (another record id), as an attacker with the database would."""
    ledger = estate.open(verify=False)
    envelope = ledger.entry_at(index).envelope  # type: ignore[union-attr]
    document = json.loads(base64.b64decode(envelope["payload"]))
    document["outcome"] = "failed"
    if resign:
        envelope = estate.agent.sign_document(document)
    else:
        envelope = dict(envelope, payload=base64.b64encode(json.dumps(document).encode()).decode())
    leaf = merkle.to_text(ledger.algorithm, merkle.leaf_hash(ledger.algorithm, signing.canonical_json(envelope)))
    ledger.store.close()
    estate.sql("UPDATE ledger_entries SET envelope = %s WHERE idx = %s", json.dumps(envelope), index)
    if update_leaf:
        estate.sql("UPDATE ledger_entries SET leaf_hash = %s WHERE idx = %s", leaf, index)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_intact_ledger_opens_audits_clean_and_logs_every_checkpoint(tmp_path: pathlib.Path, algorithm: str) -> None:
    estate = _estate(tmp_path, 5, algorithm)
    ledger = estate.open()
    ledger.append_signed(drill_step("D", "s1"))
    ledger.checkpoint()
    ledger.checkpoint()  # the same size again: consistent with itself
    assert ledger.audit() == []
    assert _codes(ledger, estate.log) == []
    lines = pathlib.Path(estate.log).read_text().splitlines()
    opened = [signing.open_envelope(json.loads(line), {estate.coordinator.keyid: estate.coordinator.public})
              for line in lines]
    assert [o.document()["tree_size"] for o in opened] == [5, 6, 6]
    assert {o.payload_type for o in opened} == {CHECKPOINT_TYPE}
    assert stat.S_IMODE(os.stat(estate.log).st_mode) == 0o600
    assert [e.index for e in estate.open().entries()] == list(range(6))


def test_tail_deletion_after_a_checkpoint_is_named_and_refused(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path)
    estate.sql("DELETE FROM ledger_entries WHERE idx >= 8")
    problems = estate.open(verify=False).audit()
    assert [p.code for p in problems] == ["truncated"]
    assert "the ledger holds 8 entries, but the checkpoint of" in problems[0].message
    assert "signed 11: entries were deleted" in problems[0].message
    with pytest.raises(LedgerTampered) as refused:
        estate.open()
    assert refused.value.code == "ledger_tampered"
    assert "entries were deleted" in str(refused.value)


def test_an_entry_deleted_in_the_middle_is_named(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path)
    estate.sql("DELETE FROM ledger_entries WHERE idx = 3")
    problems = estate.open(verify=False).audit()
    assert ("entry_missing", "entry 3 is missing") in [(p.code, p.message) for p in problems]
    assert "truncated" in [p.code for p in problems]
    with pytest.raises(LedgerTampered):
        estate.open()


def test_an_envelope_rewritten_in_the_database_is_named_and_never_served(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path)
    _rewrite_entry(estate, 4, update_leaf=False)
    codes = _codes(estate.open(verify=False))
    assert "entry_altered" in codes and "bad_signature" in codes and "rewritten" in codes
    ledger = estate.open()  # the stored leaf hashes still match the checkpoint: opening is cheap and passes...
    with pytest.raises(LedgerTampered, match="entry 4 was rewritten"):
        ledger.entries()  # ...but reading the entry re-hashes it
    with pytest.raises(LedgerTampered):
        ledger.find("r4")
    assert ledger.entry_at(3) is not None  # the others are still served


def test_an_entry_rewritten_with_its_leaf_hash_is_named_and_refused(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path)
    _rewrite_entry(estate, 4, update_leaf=True, resign=True)  # the attacker holds the agent's key
    problems = estate.open(verify=False).audit()
    assert [p.code for p in problems] == ["rewritten"]
    assert "the first 11 entries no longer hash to the root" in problems[0].message
    with pytest.raises(LedgerTampered, match="no longer hash"):
        estate.open()


def test_a_checkpoint_signed_by_another_key_is_named(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path)
    ledger = estate.open()
    envelope = json.loads(ledger.store.query("SELECT envelope FROM ledger_checkpoints")[0][0])
    forged = signing.generate_key().sign_document(signing.envelope_payload(envelope), CHECKPOINT_TYPE)
    ledger.store.close()
    estate.sql("UPDATE ledger_checkpoints SET envelope = %s", json.dumps(forged))
    problems = estate.open(verify=False).audit()
    assert [p.code for p in problems] == ["checkpoint_invalid"]
    assert "unknown key" in problems[0].message and "replaced or re-signed" in problems[0].message
    with pytest.raises(LedgerTampered):
        estate.open()


def test_a_checkpoint_row_edited_beside_its_envelope_is_named(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path)
    estate.sql("UPDATE ledger_checkpoints SET tree_size = 8")
    assert _codes(estate.open(verify=False)) == ["checkpoint_invalid"]
    with pytest.raises(LedgerTampered, match="the row was edited"):
        estate.open()


def _redo_everything(estate: Estate, tamper: str) -> None:
    """The attacker's full job: change entries, drop the checkpoints, sign new ones with the coordinator's key."""
    if tamper == "truncate":
        estate.sql("DELETE FROM ledger_entries WHERE idx >= 8")
    else:
        _rewrite_entry(estate, 4, update_leaf=True, resign=True)
    estate.sql("DELETE FROM ledger_checkpoints")
    ledger = estate.open(with_log=False)  # the attacker cannot remove lines from the log, and adds none
    ledger.checkpoint()
    ledger.store.close()


@pytest.mark.parametrize(("tamper", "code"), [("truncate", "truncated"), ("rewrite", "rewritten")])
def test_a_database_redone_wholesale_is_caught_only_against_the_log(tmp_path: pathlib.Path, tamper: str,
                                                                     code: str) -> None:
    estate = _estate(tmp_path)
    _redo_everything(estate, tamper)
    ledger = estate.open()  # consistent in itself: opens
    assert ledger.audit() == []
    problems = ledger.audit(against=read_checkpoint_log(estate.log))
    assert code in [p.code for p in problems]
    assert all(estate.log in p.message for p in problems)


def test_equivocating_checkpoints_in_the_log_are_inconsistent(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path, 6)
    ledger = estate.open()
    algorithm = ledger.algorithm
    leaves = [merkle.from_text(e.leaf_hash)[1] for e in ledger.entries()]

    def signed(size: int, root: bytes) -> str:
        body = {"schema": "drill.checkpoint/v1", "tree_size": size, "root": merkle.to_text(algorithm, root),
                "issued": f"2026-12-0{size}T00:00:00Z", "algorithm": algorithm, "keys_digest": "x"}
        return json.dumps(estate.coordinator.sign_document(body, CHECKPOINT_TYPE))

    log = tmp_path / "other.jsonl"
    log.write_text("\n".join([signed(3, merkle.root(algorithm, leaves[:3])),
                              signed(5, merkle.root(algorithm, [*leaves[:4], leaves[0]]))]) + "\n")
    problems = ledger.audit(against=read_checkpoint_log(str(log)))
    assert sorted(p.code for p in problems) == ["checkpoint_inconsistent", "rewritten"]
    assert any("no consistency from the checkpoint of 2026-12-03T00:00:00Z" in p.message for p in problems)


def test_a_malformed_log_is_named_line_by_line_never_a_traceback(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path, 3)
    good = pathlib.Path(estate.log).read_text()
    stranger = json.dumps(signing.generate_key().sign_document({"tree_size": 1}, CHECKPOINT_TYPE))
    unsigned_body = json.dumps(estate.coordinator.sign_document({"schema": "other"}, CHECKPOINT_TYPE))
    log = tmp_path / "bad.jsonl"
    log.write_bytes(good.encode() + b"not json\n[1, 2]\n\n" + b"x" * (MAX_LOG_LINE + 10) + b"\n"
                    + b"[" * 100_000 + b"\n" + b"\xff\xfe\n" + stranger.encode() + b"\n"
                    + unsigned_body.encode() + b"\n" + b'{"payload": "' + good.encode()[:20])
    checked = read_checkpoint_log(str(log))
    assert [number for number, _ in checked.checkpoints] == [1, 8, 9]  # the good one, a stranger's, a wrong body
    problems = estate.open().audit(against=checked)
    named = [(p.code, p.message.split(":")[0]) for p in problems]
    assert ("log_malformed", f"{log} line 2 is not JSON") in named
    assert ("log_malformed", f"{log} line 3 is not a JSON envelope") in named
    assert (f"{log} line 5 is longer than {MAX_LOG_LINE} bytes") in [p.message for p in problems]
    assert ("log_malformed", f"{log} line 6 is not JSON") in named
    assert ("log_malformed", f"{log} line 7 is not JSON") in named
    assert ("log_malformed", f"{log} line 10 is not JSON") in named  # cut off: a write interrupted
    assert [p.code for p in problems].count("checkpoint_invalid") == 2
    assert not any(f"{log} line 1 " in p.message or f"{log} line 1)" in p.message for p in problems)  # the good one


def test_a_log_longer_than_its_bound_is_named(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "long.jsonl"
    log.write_bytes(b"\n" * (MAX_LOG_LINES + 5))
    checked = read_checkpoint_log(str(log))
    assert [p.code for p in checked.problems] == ["log_too_long"]


def test_a_log_that_cannot_be_read_or_written_is_an_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CheckpointLogError, match="cannot read the checkpoint log"):
        read_checkpoint_log(str(tmp_path / "missing.jsonl"))
    with pytest.raises(CheckpointLogError, match="not a regular file"):
        read_checkpoint_log(str(tmp_path))
    estate = _estate(tmp_path, 2)
    ledger = Ledger(open_store(estate.path), estate.coordinator, checkpoint_log=str(tmp_path / "no" / "such.jsonl"))
    ledger.append_signed(drill_step("D", "s1"))
    with pytest.raises(CheckpointLogError) as failed:
        ledger.checkpoint()
    assert failed.value.code == "checkpoint_log"
    # nothing stored that the log does not have
    assert ledger.store.query("SELECT tree_size FROM ledger_checkpoints") == [(2,)]


def test_the_log_is_only_ever_appended_to(tmp_path: pathlib.Path) -> None:
    estate = _estate(tmp_path, 2)
    before = pathlib.Path(estate.log).read_bytes()
    ledger = estate.open()
    ledger.append_signed(drill_step("D", "s9"))
    ledger.checkpoint()
    after = pathlib.Path(estate.log).read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 2


def test_the_drill_config_names_the_log_and_the_coordinator_writes_it(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pw").write_text("x\n")
    agent = tmp_path / "agent.yaml"
    agent.write_text(f"host: app01\nstate_dir: {tmp_path}/agent\n"
                     f"repositories: {{local: {{url: {tmp_path}/repo, password_file: {tmp_path}/pw}}}}\n"
                     f"targets: {{documents: {{kind: files, paths: [{tmp_path}/data]}}}}\n"
                     "policies: {nightly: {targets: [documents], repository: local}}\n")
    config = tmp_path / "drill.yaml"
    head = f"state_dir: {tmp_path}/coordinator\nsystems: {{app01: {{agent_config: {agent}}}}}\n"
    config.write_text(head + "checkpoint_log: checkpoints.jsonl\n")
    with pytest.raises(ConfigError) as relative:
        load_drill_config(str(config))
    assert "checkpoint_log" in str(relative.value)
    config.write_text(head + f"checkpoint_log: {tmp_path}/checkpoints.jsonl\n")
    loaded = load_drill_config(str(config))
    assert loaded.checkpoint_log == f"{tmp_path}/checkpoints.jsonl"
    with open_ledger(loaded) as ledger:
        ledger.append_signed(drill_step("D", "s1"))
        ledger.checkpoint()
    assert len(read_checkpoint_log(f"{tmp_path}/checkpoints.jsonl").checkpoints) == 1
