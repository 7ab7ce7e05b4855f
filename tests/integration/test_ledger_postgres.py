"""The ledger on a real PostgreSQL server (by URL), the same as on SQLite: appends, refusals, proofs, a drill."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agents.contract import signing
from drill import merkle
from drill.ledger.ledger import AlreadyPresent, Ledger, Refused
from drill.ledger.store import open_store
from tests.support.configs import Workspace
from tests.support.databases import admin_connection, empty_database
from tests.support.drills import drillctl, make_estate
from tests.support.records import backup_document


@pytest.fixture
def ledger_url() -> Iterator[str]:
    with empty_database("drill_ledger") as url:
        yield url


def test_the_postgres_ledger_appends_refuses_and_proves(ledger_url: str) -> None:
    coordinator = signing.generate_key()
    ledger = Ledger(open_store(ledger_url), coordinator)
    agent = signing.generate_key("sm3")  # an agent naming its key by SM3; the ledger hashes with SHA-256
    ledger.add_key(signing.public_pem(agent.public), "app01", "agent")
    envelopes = [agent.sign_document(backup_document(f"r{i}")) for i in range(5)]
    for envelope in envelopes:
        ledger.append(envelope)
    with pytest.raises(AlreadyPresent):
        ledger.append(envelopes[2])
    with pytest.raises(Refused) as replay:
        ledger.append(agent.sign_document(backup_document("r2", host="x")))
    assert replay.value.code == "replay"
    head = signing.envelope_payload(ledger.checkpoint())
    assert head["tree_size"] == 5
    _, root = merkle.from_text(head["root"])
    for entry in ledger.entries():
        proof = [merkle.from_text(p)[1] for p in ledger.inclusion_proof(entry.index, 5)]
        assert merkle.verify_inclusion("sha256", entry.index, 5, merkle.from_text(entry.leaf_hash)[1], proof, root)
    reopened = Ledger(open_store(ledger_url), coordinator)
    assert reopened.size() == 5 and reopened.audit() == []


def test_a_drill_with_a_postgres_ledger(workspace_once: Workspace, scratch_dir: str, ledger_url: str) -> None:
    workspace = workspace_once
    estate = make_estate(workspace.root, workspace.restic, scratch_dir, ledger=ledger_url)
    run = drillctl("drill", "run", "-c", estate.drill_config, "--site", "local", "--json")
    assert run.returncode == 0, run.stderr
    drill_id = json.loads(run.stdout)["drill_id"]
    bundle = f"{workspace.root}/bundle.zip"
    drillctl("evidence", "export", "-c", estate.drill_config, "--drill", drill_id, "--out", bundle, check=True)
    verified = drillctl("evidence", "verify", bundle, "--json")
    assert verified.returncode == 0, verified.stdout
    with admin_connection(ledger_url.rsplit("/", 1)[1]) as connection:
        kinds = [r[0] for r in connection.execute("SELECT kind FROM ledger_entries ORDER BY idx").fetchall()]
    assert kinds == ["backup", "drill.started", "verify", "drill.step", "drill.finished"]
