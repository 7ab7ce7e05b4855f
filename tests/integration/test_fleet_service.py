"""The fleet on real processes: ``drillctl serve`` on 127.0.0.1, an agent on 127.0.0.2 and a scratch host on
127.0.0.3 (``drill-agent run`` each, own state dir), a real restic repository they share."""

from __future__ import annotations

import json
import os
import time

import yaml

from agents.config.model import load_config
from agents.contract import signing
from agents.fleet.link import Link, LinkError
from agents.fleet.membership import load_membership
from drill.config import load_drill_config
from drill.coordinator import open_ledger
from drill.drills import backup_records
from drill.fleet import enrolment, queue
from drill.fleet.tables import create_fleet_tables
from drill.ledger.store import open_store
from tests.support.configs import Workspace, write_files
from tests.support.fleet import free_port, running_agent, serving, wait_for, write_coordinator_config
from tests.support.processes import run_cli


def _write(path: str, document: dict[str, object]) -> str:
    with open(path, "w") as handle:
        yaml.safe_dump(document, handle)
    return path


def test_an_agent_and_a_scratch_host_enrol_push_records_and_verify_a_queued_job(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    root = workspace_once.root
    write_files(workspace_once.data, {"a.txt": "alpha", "sub/b.txt": "beta" * 1000})
    repository = workspace_once.local_repository("main") | {"site": "local"}
    agent_config = _write(os.path.join(root, "app01.yaml"), {
        "host": "app01", "state_dir": os.path.join(root, "app01-state"),
        "restic": {"binary": workspace_once.restic}, "repositories": {"local": repository},
        "targets": {"documents": {"kind": "files", "paths": [workspace_once.data]}},
        "policies": {"nightly": {"targets": ["documents"], "repository": "local"}},
        "fleet": {"source_address": "127.0.0.2"}})
    scratch_config = _write(os.path.join(root, "scratch01.yaml"), {
        "host": "scratch01", "role": "scratch", "state_dir": os.path.join(root, "scratch01-state"),
        "restic": {"binary": workspace_once.restic}, "repositories": {"app01-copy": repository},
        "scratch": {"directory": scratch_dir}, "fleet": {"source_address": "127.0.0.3", "capacity": 2}})
    config = write_coordinator_config(root, free_port())
    with serving(config, os.path.join(root, "serve.log")) as coordinator:
        assert run_cli("drill-agent", "init", "-c", agent_config).returncode == 0
        for path, role in ((agent_config, "agent"), (scratch_config, "scratch")):
            enrolled = run_cli("drill-agent", "enrol", "-c", path, "--coordinator", coordinator.url,
                               "--token", coordinator.token(role, "local"),
                               "--server-fingerprint", coordinator.fingerprint, "--json")
            assert enrolled.returncode == 0, enrolled.stderr
        reused = run_cli("drill-agent", "enrol", "-c", scratch_config, "--coordinator", coordinator.url, "--token",
                         "drill-enrol-" + "x" * 43, "--server-fingerprint", coordinator.fingerprint)
        assert reused.returncode == 2 and "token_unknown" not in reused.stdout and "no such enrolment token" in \
            reused.stderr
        wrong_pin = run_cli("drill-agent", "enrol", "-c", scratch_config, "--coordinator", coordinator.url,
                            "--token", coordinator.token("scratch"), "--server-fingerprint", "sha256:" + "0" * 64)
        assert wrong_pin.returncode == 2 and "not the pinned" in wrong_pin.stderr
        backup = run_cli("drill-agent", "backup", "-c", agent_config, "-p", "nightly", "--level", "full", "--json")
        assert backup.returncode == 0, backup.stderr

        drill_config = load_drill_config(config)
        store = open_store(drill_config.ledger_url)
        create_fleet_tables(store)
        with running_agent(agent_config, os.path.join(root, "app01.log")), \
                running_agent(scratch_config, os.path.join(root, "scratch01.log")):
            def backup_in_ledger() -> bool:
                return bool(store.query("SELECT 1 FROM ledger_entries WHERE kind = 'backup' AND host = 'app01'"))
            wait_for("the backup record to reach the ledger", backup_in_ledger)
            with open_ledger(drill_config) as ledger:
                records, keys = backup_records(ledger, "app01", "documents")
            agents = {row.host: row for row in enrolment.list_agents(store)}
            repository_id = agents["app01"].inventory.repositories["local"].id
            assert repository_id and agents["scratch01"].inventory.repositories["app01-copy"].id == repository_id
            job_id = queue.enqueue(store, {"kind": "verify", "target": "documents", "target_kind": "files",
                                           "backup_host": "app01", "snapshot": "latest", "backup_records": records,
                                           "trusted_keys": keys}, reason="test", now=time.time(), lifetime=600,
                                   site="local", repository_id=repository_id)

            def job_finished() -> queue.QueuedJob | None:
                [job] = [j for j in queue.list_jobs(store) if j.job_id == job_id]
                return job if job.state not in ("queued", "running") else None
            job = wait_for("the scratch host to verify the job", job_finished, timeout=180)
            assert (job.state, job.outcome, job.claimed_by) == ("done", "passed", agents["scratch01"].agent_id)
            verified = store.query("SELECT host FROM ledger_entries WHERE kind = 'verify'")
            assert verified == [("scratch01",)]

        listed = json.loads(coordinator.ctl("agents", "list", "--json").stdout)
        assert {(a["host"], a["role"], a["last_address"]) for a in listed} == {
            ("app01", "agent", "127.0.0.2"), ("scratch01", "scratch", "127.0.0.3")}

        revoked = coordinator.ctl("agents", "revoke", "app01")
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        agent = load_config(agent_config)
        membership = load_membership(agent)
        assert membership is not None
        key, _ = signing.ensure_key(os.path.join(agent.state_dir, "keys"))
        link = Link(membership.url, membership.fingerprint, key, membership.agent_id, "127.0.0.2")
        try:
            link.post("/v1/poll", {"running": []})
            raise AssertionError("a revoked agent's poll was answered")
        except LinkError as refused:
            assert (refused.status, refused.code) == (403, "agent_revoked")
        store.close()
