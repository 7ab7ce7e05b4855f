"""The conformance suite: the same cases against every registered database engine, on real servers and restic.

Each engine of ``agents.engines.ENGINES`` has an adapter in ``tests/support/engines.py``;
an engine without one fails here. Cases that involve restic run on both restic
versions; the ones that fail before restic is reached (wrong password, missing
privilege, server down) run once.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from agents.config.model import AgentConfig
from agents.engines import ENGINES as REGISTERED
from agents.restic.runner import Restic
from policies.levels import Level
from targets.mysql import checksum as my_checksum
from tests.support.components import free_port
from tests.support.configs import Workspace
from tests.support.databases import ThrowawayDatabase, password_cluster
from tests.support.engines import (
    ENGINES,
    EngineUnderTest,
    instances_left,
    original_dump,
    rewrite_dump,
)
from tests.support.forgery import vouch_for
from tests.support.jobs import backup, codes, doc, verify
from tests.support.processes import kill_after_start, run_cli

KINDS = sorted(REGISTERED)


def test_every_registered_engine_has_an_adapter() -> None:
    assert set(ENGINES) == set(REGISTERED)


@pytest.fixture(params=KINDS)
def engine(request: pytest.FixtureRequest) -> EngineUnderTest:
    return ENGINES[request.param]


def _secret(workspace: Workspace, value: str) -> str:
    path = os.path.join(workspace.root, "db.pw")
    with open(path, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def _config(workspace: Workspace, engine: EngineUnderTest, db: ThrowawayDatabase, scratch: str | None = None,
            *, password: str | None = None, **target: object) -> AgentConfig:
    spec = engine.target(db, _secret(workspace, db.password if password is None else password), **target)
    path = workspace.write_config({"local": workspace.local_repository("local")}, targets={"app": spec},
                                  policies={"nightly": {"targets": ["app"], "repository": "local"}},
                                  scratch={"directory": scratch} if scratch else None, name=f"{engine.kind}.yaml")
    config = workspace.load(path)
    Restic(config.restic_binary, config.repositories["local"]).init()
    return config


def test_manifests_are_exact_under_concurrent_writers_and_verify_without_false_alarm(
    workspace_once: Workspace, scratch_dir: str, engine: EngineUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = workspace_once
    # MySQL sums a large table in key ranges on two connections; split this small one too, and see that it was.
    monkeypatch.setattr(my_checksum, "SPLIT_FROM_ROWS", 1000)
    splits: list[list[str]] = []
    real_ranges = my_checksum.make_key_ranges

    def noted_ranges(key: str, low: int | None, high: int | None, parts: int) -> list[str]:
        splits.append(real_ranges(key, low, high, parts))
        return splits[-1]

    monkeypatch.setattr(my_checksum, "make_key_ranges", noted_ranges)
    with engine.make_database(rows=5000) as db:
        config = _config(workspace, engine, db, scratch_dir)
        stop, writes = threading.Event(), {"n": 0}
        writer = threading.Thread(target=engine.write, args=(db.name, stop, writes))
        writer.start()
        try:
            time.sleep(0.2)
            records = [backup(config, "nightly", level)[0] for level in (Level.FULL, Level.INCREMENTAL,
                                                                        Level.DIFFERENTIAL)]
        finally:
            stop.set()
            writer.join()
        assert writes["n"] > 50, "the writer did not write during the backups"
        restic = Restic(config.restic_binary, config.repositories["local"])
        accounts = []
        for record in records:
            assert record.outcome == "success", record.findings
            assert [f.subject for f in record.findings if f.code == "non_transactional_table"] == [
                f"{db.name}.{t}" for t in engine.non_transactional]
            assert record.snapshot is not None and record.manifest is not None
            manifest = json.loads(restic.dump(record.manifest.snapshot_id,  # type: ignore[union-attr]
                                              f"/{db.name}.manifest.json"))
            assert manifest["snapshot_id"] == record.snapshot.id
            assert manifest["non_transactional"] == list(engine.non_transactional)
            # Restored independently of drill, with the engine's own tools: zero mismatches, table by table.
            recomputed = engine.restore_and_checksum(config, record.snapshot.id, db.name)
            assert recomputed.table_documents() == manifest["tables"]
            assert recomputed.schema_digest == manifest["schema_digest"]
            accounts.append({t["name"]: t["rows"] for t in manifest["tables"]}["accounts"])
            # No false alarm: the verify job, into a throwaway instance, agrees.
            [verified] = verify(config, "app", snapshot=record.snapshot.id)
            assert verified.verdict == "passed", verified.findings
            assert verified.compared.rows == sum(t["rows"] for t in manifest["tables"])
            assert verified.scratch.where == "throwaway instance" and verified.scratch.engine == engine.kind
            assert codes(verified) <= {"non_transactional_table"}
        assert accounts[0] < accounts[-1]  # the backups really saw the writer's rows
        assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []
        # Three backups and three verifications split; the independent recompute above summed whole tables.
        assert engine.kind != "mysql" or len([s for s in splits if len(s) == 2]) >= 6


def test_an_intact_dump_verifies_from_the_command_line(
    workspace: Workspace, scratch_dir: str, engine: EngineUnderTest
) -> None:
    with engine.make_database(rows=500) as db:
        config = _config(workspace, engine, db, scratch_dir)
        [record] = backup(config, "nightly", Level.FULL)
        assert record.outcome == "success", record.findings
        result = run_cli("drill-agent", "verify", "--config", config.source, "--repository", "local", "--target",
                         "app", "--latest", "--read-data-parts", "1", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        [document] = json.loads(result.stdout)
        assert document["verdict"] == "passed"
        assert document["compared"] == {"files": 0, "bytes": document["dump"]["bytes"], "tables": engine.tables,
                                        "rows": engine.rows(500)}
        assert {"scratch_start", "restore", "compare"} <= set(document["timings"]["phases"])
        assert document["check"]["passed"] is True and document["check"]["coverage"]["fraction"] == 1.0
        assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


@pytest.mark.parametrize("change", ["deleted_row", "dropped_table"])
def test_an_altered_dump_is_caught_and_named(
    workspace_once: Workspace, scratch_dir: str, engine: EngineUnderTest, change: str
) -> None:
    workspace = workspace_once
    statement, (code, subject) = getattr(engine, change)
    with engine.make_database(rows=300) as db:
        config = _config(workspace, engine, db, scratch_dir)
        backup(config, "nightly", Level.FULL)
        altered = rewrite_dump(config, db.name, engine.altered_dump(original_dump(config, db.name), statement))
        [skipped] = verify(config, "app")  # nothing vouches for the rewritten dump: the recorded one is verified
        assert skipped.verdict == "passed" and skipped.snapshot is not None and skipped.snapshot.id != altered
        assert [(f.code, f.severity, f.subject) for f in skipped.findings if f.code == "unrecorded_snapshot"] == [
            ("unrecorded_snapshot", "warning", altered)]
        vouch_for(config, altered, database=db.name)  # a record vouching for it: the content is still compared
        [record] = verify(config, "app")
        assert record.snapshot is not None and record.snapshot.id == altered
        assert record.verdict == "failed" and record.outcome == "failed"
        found = {(f.code, f.subject) for f in record.findings}
        assert (code, engine.subject(db, subject)) in found
        assert {"dump_snapshot_mismatch", "dump_digest_mismatch"} <= codes(record)
        assert os.listdir(scratch_dir) == [] and instances_left(scratch_dir) == []


def test_a_dump_killed_half_way_leaves_no_usable_snapshot(workspace: Workspace, engine: EngineUnderTest) -> None:
    with engine.make_database(rows=300_000) as db:
        config = _config(workspace, engine, db)
        killer, killed = kill_after_start(engine.dump_programs, db.name)
        [record] = backup(config, "nightly", Level.FULL)
        killer.join()
        assert killed, "the dump tool was never seen running"
        assert record.outcome == "failed" and "dump_failed" in codes(record)
        assert record.snapshot is None and record.manifest is None
        snapshots = Restic(config.restic_binary, config.repositories["local"]).snapshots()
        assert [s for s in snapshots if s.tag_value("drill.job") == record.job.id] == []


# -- failures before restic is reached: once, with the distro restic ---------------------------------------------

def test_a_missing_privilege_and_an_unknown_database_fail_with_the_servers_words(
    workspace_once: Workspace, engine: EngineUnderTest
) -> None:
    with engine.make_database(rows=10, privileged=False) as db:
        [record] = backup(_config(workspace_once, engine, db), "nightly", Level.FULL)
        assert record.outcome == "failed"
        assert any(word in f.message.lower() for f in record.findings for word in engine.denied_words), \
            record.findings
    with engine.make_database(rows=10) as db:
        config = _config(workspace_once, engine, db, databases=[db.name, "no_such_database_here"])
        records = {r.target.database: r for r in backup(config, "nightly", Level.FULL)}
        assert records[db.name].outcome == "success"
        missing = records["no_such_database_here"]
        assert missing.outcome == "failed" and codes(missing) == {"database_unavailable"}


def test_a_server_that_is_down_is_named(workspace_once: Workspace, engine: EngineUnderTest) -> None:
    db = ThrowawayDatabase("app", "backup", "x")
    [record] = backup(_config(workspace_once, engine, db, port=free_port()), "nightly", Level.FULL)
    assert record.outcome == "failed"
    [finding] = [f for f in record.findings if f.code == "database_unavailable"]
    assert any(word in finding.message.lower() for word in engine.refused_words), finding.message


def test_a_wrong_password_is_refused_and_never_recorded(
    workspace_once: Workspace, scratch_dir: str, engine: EngineUnderTest
) -> None:
    if engine.kind == "postgres":  # the machine's server trusts everyone: a throwaway cluster asks for a password
        with password_cluster(scratch_dir, "right-password") as socket_dir:
            db = ThrowawayDatabase("postgres", "postgres", "right-password")
            [right] = backup(_config(workspace_once, engine, db, host=socket_dir), "nightly", Level.FULL)
            assert right.outcome == "success", right.findings
            [wrong] = backup(_config(workspace_once, engine, db, password="wrong-password", host=socket_dir),
                             "nightly", Level.FULL)
    else:
        with engine.make_database(rows=10) as db:
            wrong = backup(_config(workspace_once, engine, db, password="wrong-password"), "nightly", Level.FULL)[0]
    assert wrong.outcome == "failed" and codes(wrong) == {"database_unavailable"}
    assert any(word in wrong.findings[0].message.lower() for word in (*engine.denied_words, "access denied"))
    assert "wrong-password" not in json.dumps(doc(wrong))
