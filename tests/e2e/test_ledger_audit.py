"""``drillctl ledger audit`` end to end: a truncated ledger refused and named, a rewrite caught against the log."""

from __future__ import annotations

import json
import pathlib
import sqlite3

from agents.contract import signing
from drill.config import load_drill_config
from drill.coordinator import open_ledger
from drill.ledger.ledger import Ledger
from drill.ledger.store import open_store
from tests.support.processes import run_cli
from tests.support.records import drill_step


def _configs(tmp_path: pathlib.Path) -> tuple[str, pathlib.Path, pathlib.Path]:
    """A drill config with a checkpoint log; (its path, the ledger's database, the log)."""
    (tmp_path / "pw").write_text("x\n")
    agent = tmp_path / "agent.yaml"
    agent.write_text(f"host: app01\nstate_dir: {tmp_path}/agent\n"
                     f"repositories: {{local: {{url: {tmp_path}/repo, password_file: {tmp_path}/pw}}}}\n"
                     f"targets: {{documents: {{kind: files, paths: [{tmp_path}/data]}}}}\n"
                     "policies: {nightly: {targets: [documents], repository: local}}\n")
    database, log = tmp_path / "ledger.db", tmp_path / "log" / "checkpoints.jsonl"
    log.parent.mkdir()
    config = tmp_path / "drill.yaml"
    config.write_text(f"state_dir: {tmp_path}/coordinator\nledger: sqlite:///{database}\ncheckpoint_log: {log}\n"
                      f"systems: {{app01: {{agent_config: {agent}}}}}\n")
    return str(config), database, log


def _audit(config: str, *extra: str) -> tuple[int, dict[str, object]]:
    result = run_cli("drillctl", "ledger", "audit", "-c", config, "--json", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _lines(log: pathlib.Path) -> int:
    return len(log.read_text().splitlines())


def test_audit_names_a_truncated_ledger_and_the_other_commands_refuse_it(tmp_path: pathlib.Path) -> None:
    config, database, log = _configs(tmp_path)
    with open_ledger(load_drill_config(config)) as ledger:
        for number in range(11):
            ledger.append_signed(drill_step("D", f"s{number}"))
        ledger.checkpoint()
    code, report = _audit(config)
    assert code == 0 and report["intact"] is True and report["problems"] == []
    assert report["checkpoint"]["tree_size"] == 11  # type: ignore[index]

    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM ledger_entries WHERE idx >= 8")
    signed = _lines(log)
    for command in (["drill", "list"], ["drill", "show", "D"], ["keys", "list"],
                    ["evidence", "export", "--drill", "D", "--out", str(tmp_path / "bundle.zip")]):
        refused = run_cli("drillctl", *command, "-c", config)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, (command, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "the ledger holds 8 entries" in refused.stderr and "entries were deleted" in refused.stderr
    assert not (tmp_path / "bundle.zip").exists()
    audit = run_cli("drillctl", "ledger", "audit", "-c", config)
    assert audit.returncode == 1, audit.stderr
    assert "NOT INTACT: 1 problem(s); no checkpoint signed" in audit.stdout
    assert "  truncated: the ledger holds 8 entries, but the checkpoint of " in audit.stdout
    assert _lines(log) == signed  # nothing signed over a ledger with problems


def test_a_ledger_redone_wholesale_is_caught_against_the_log(tmp_path: pathlib.Path) -> None:
    config, database, log = _configs(tmp_path)
    drill_config = load_drill_config(config)
    with open_ledger(drill_config) as ledger:
        for number in range(11):
            ledger.append_signed(drill_step("D", f"s{number}"))
        ledger.checkpoint()
    checked = run_cli("drillctl", "ledger", "audit", "-c", config, "--against", str(log))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked against 1 checkpoint(s)" in checked.stdout and "intact" in checked.stdout

    # The attacker deletes the tail and the checkpoints, and signs a new one with the coordinator's key.
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM ledger_entries WHERE idx >= 8")
        connection.execute("DELETE FROM ledger_checkpoints")
    key = signing.load_key(f"{drill_config.state_dir}/keys", drill_config.digest)
    assert key is not None
    store = open_store(str(database))
    Ledger(store, key).checkpoint()
    store.close()

    code, report = _audit(config)
    assert (code, report["intact"]) == (0, True)  # the database alone cannot tell
    code, report = _audit(config, "--against", str(log))
    assert code == 1 and report["intact"] is False and report["checkpoint"] is None
    problems = report["problems"]
    assert isinstance(problems, list)
    assert "truncated" in [p["code"] for p in problems]
    assert all(set(p) == {"code", "message"} for p in problems)

    log.with_name("broken.jsonl").write_text(log.read_text() + "{not json\n")
    code, report = _audit(config, "--against", str(log.with_name("broken.jsonl")))
    assert code == 1 and "log_malformed" in [p["code"] for p in report["problems"]]  # type: ignore[attr-defined]

    missing = run_cli("drillctl", "ledger", "audit", "-c", config, "--against", str(tmp_path / "nowhere.jsonl"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"cannot read the checkpoint log {tmp_path / 'nowhere.jsonl'}" in missing.stderr
