"""The fleet on real processes: ``drillctl serve`` on 127.0.0.1, agents and scratch hosts on 127.0.0.2 and up
(``drill-agent run`` each, its own state dir), real restic repositories in folders and on S3."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agents.config.model import load_config
from agents.contract import signing
from agents.contract.inventory import Inventory
from agents.fleet.link import Link, LinkError
from agents.fleet.membership import load_membership
from drill.config import load_drill_config
from drill.fleet import enrolment, queue
from drill.fleet.tables import create_fleet_tables
from drill.ledger.store import Store, open_store
from tests.support.components import S3Server
from tests.support.configs import Workspace, write_files
from tests.support.databases import empty_database
from tests.support.fleet import Coordinator, free_port, running_agent, serving, wait_for, write_coordinator_config
from tests.support.processes import run_cli
from tests.support.receivers import http_receiver
from tests.support.relay import Relay, relay_to


@pytest.fixture
def postgres_ledger() -> Iterator[str]:
    with empty_database("drill_fleet") as url:
        yield url


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
    hooks = contextlib.ExitStack()
    web = hooks.enter_context(http_receiver())
    config = write_coordinator_config(root, free_port(), notifications={
        "webhooks": [{"format": "json", "url": f"{web.url}/ops"}], "every": "1s"})
    with hooks, serving(config, os.path.join(root, "serve.log")) as coordinator:
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
            agents = {row.host: row for row in enrolment.list_agents(store)}
            repository_id = agents["app01"].inventory.repositories["local"].id
            assert repository_id and agents["scratch01"].inventory.repositories["app01-copy"].id == repository_id
            shown = json.loads(coordinator.ctl("plan", "show", "--json").stdout)
            flagged = {(f["code"], f["subject"]) for f in shown["flags"]}
            assert ("coverage_overdue", "app01/documents@local") in flagged
            overdue = coordinator.ctl("status", "--json")
            assert overdue.returncode == 1, overdue.stderr
            [row] = json.loads(overdue.stdout)["targets"]
            assert [p["code"] for p in row["problems"]] == ["coverage_overdue"] and row["backup"]["level"] == "full"
            planned = json.loads(coordinator.ctl("plan", "run", "--json").stdout)
            assert sorted((j["kind"], j["target"], j["site"]) for j in planned["jobs"]) == [
                ("check", None, "local"), ("verify", "documents", "local")]
            assert "not verified yet" in next(j["reason"] for j in planned["jobs"] if j["kind"] == "verify")
            assert len(planned["queued"]) == 2

            def jobs_finished() -> list[queue.QueuedJob] | None:
                jobs = queue.list_jobs(store)
                return jobs if all(j.state not in ("queued", "running") for j in jobs) else None
            jobs = wait_for("the scratch host to run the plan", jobs_finished, timeout=180)
            assert sorted((j.kind, j.state, j.outcome, j.claimed_by) for j in jobs) == [
                ("check", "done", "passed", agents["scratch01"].agent_id),
                ("verify", "done", "passed", agents["scratch01"].agent_id)]
            again = json.loads(coordinator.ctl("plan", "show", "--json").stdout)
            assert not [f for f in again["flags"] if f["code"] == "coverage_overdue"]
            assert not [j for j in again["jobs"] if j["kind"] == "verify"]  # verified: nothing due tonight
            well = coordinator.ctl("status")
            assert well.returncode == 0 and "all well" in well.stdout, well.stdout

            def told() -> list[tuple[str, str, str]]:
                return [(e["event"], e["code"], e["subject"]) for e in (json.loads(p.body) for p in web.on("/ops"))]
            overdue = ("coverage_overdue", "app01/documents@local")
            wait_for("ops to be told the problem ended", lambda: ("recovery", *overdue) in told())
            assert told().count(("failure", *overdue)) == 1 and told().count(("recovery", *overdue)) == 1, told()
            assert "passed" in well.stdout and "local/scratch01" in well.stdout
            metrics = _metrics(coordinator.url)
            assert metrics[("drill_verification_passed", (("system", "app01"), ("target", "documents")))] == 1
            assert metrics[("drill_coverage_ratio", ())] == 1 and metrics[("drill_ledger_audit_ok", ())] == 1
            assert metrics[("drill_jobs", (("state", "done"),))] == 2
            assert metrics[("drill_agent_silent", (("host", "scratch01"), ("role", "scratch")))] == 0
            assert metrics[("drill_backup_last_success_timestamp_seconds", (
                ("level", "full"), ("system", "app01"), ("target", "documents")))] > time.time() - 600

            # A job for a target the agent does not have comes back as its signed refusal.
            lacking = queue.enqueue(store, {"kind": "backup", "policy": "nightly", "target": "mail"}, reason="test",
                                    now=time.time(), lifetime=600, agent_id=agents["app01"].agent_id)

            def refused() -> queue.QueuedJob | None:
                [job] = [j for j in queue.list_jobs(store) if j.job_id == lacking]
                return job if job.state not in ("queued", "running") else None
            job = wait_for("the agent's refusal", refused)
            assert (job.state, job.outcome) == ("failed", "refused")
            [envelope] = [json.loads(r[0]) for r in store.query(
                "SELECT envelope FROM ledger_entries WHERE kind = 'refused' AND host = 'app01'")]
            refusal = signing.envelope_payload(envelope)
            assert refusal["job"]["request"] == lacking and refusal["findings"][0]["code"] == "unknown_target"
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
        except LinkError as error:
            assert (error.status, error.code) == (403, "agent_revoked")
        store.close()


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of the coordinator's /metrics, by name and sorted labels."""
    answer = httpx.get(f"{url}/metrics", verify=False, timeout=30)  # loopback, the self-signed certificate
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def _agent(workspace: Workspace, host: str, address: str, repositories: dict[str, object]) -> str:
    data = os.path.join(workspace.root, f"{host}-data")
    write_files(data, {"ledger.csv": f"{host}," * 2000, "conf/app.ini": f"[{host}]\nmode=prod\n"})
    return _write(os.path.join(workspace.root, f"{host}.yaml"), {
        "host": host, "state_dir": os.path.join(workspace.root, f"{host}-state"),
        "restic": {"binary": workspace.restic}, "repositories": repositories,
        "targets": {"documents": {"kind": "files", "paths": [data]}},
        "policies": {"nightly": {"targets": ["documents"], "repository": "local", "replicate_to": ["same-city"]}},
        "fleet": {"source_address": address}})


def _scratch(workspace: Workspace, host: str, address: str, repositories: dict[str, object], scratch_dir: str,
             capacity: int) -> str:
    return _write(os.path.join(workspace.root, f"{host}.yaml"), {
        "host": host, "role": "scratch", "state_dir": os.path.join(workspace.root, f"{host}-state"),
        "restic": {"binary": workspace.restic}, "repositories": repositories,
        "scratch": {"directory": scratch_dir}, "fleet": {"source_address": address, "capacity": capacity}})


SCRATCH_HOSTS = {"local": "scratch-local", "same-city": "scratch-city"}


def test_three_agents_and_two_scratch_hosts_verify_every_target_at_its_site_and_drill_through_a_killed_coordinator(
    workspace_once: Workspace, scratch_dir: str, postgres_ledger: str, s3: S3Server
) -> None:
    """The fleet of the issue: app01 and app02 back up to folders, app03 to S3 and reaches the coordinator over a
    link the test cuts for a simulated day; scratch-local and scratch-city read the copies at their own sites."""
    root = workspace_once.root
    s3.make_bucket("backups")
    agents: dict[str, str] = {}
    readers: dict[str, dict[str, object]] = {"local": {}, "same-city": {}}
    for number, host in enumerate(("app01", "app02", "app03")):
        if host == "app03":
            local = workspace_once.s3_repository(s3, "backups", f"{host}-local", site="local")
            copy = workspace_once.s3_repository(s3, "backups", f"{host}-city", site="same-city")
        else:
            local = workspace_once.local_repository(f"{host}-local") | {"site": "local"}
            copy = workspace_once.local_repository(f"{host}-city") | {"site": "same-city"}
        agents[host] = _agent(workspace_once, host, f"127.0.0.{2 + number}", {"local": local, "same-city": copy})
        readers["local"][f"{host}-local"], readers["same-city"][f"{host}-city"] = local, copy
    scratches = {site: _scratch(workspace_once, SCRATCH_HOSTS[site], f"127.0.0.{5 + number}", readers[site],
                                scratch_dir, capacity=3) for number, site in enumerate(SCRATCH_HOSTS)}
    config = write_coordinator_config(root, port := free_port(), ledger=postgres_ledger)
    log = os.path.join(root, "serve.log")
    with relay_to(("127.0.0.1", port)) as link03, serving(config, log) as coordinator:
        for path in agents.values():
            assert run_cli("drill-agent", "init", "-c", path).returncode == 0
            assert run_cli("drill-agent", "backup", "-c", path, "-p", "nightly", "--level", "full").returncode == 0
        members = [*((h, p, "agent", "local") for h, p in agents.items()),
                   *((SCRATCH_HOSTS[s], p, "scratch", s) for s, p in scratches.items())]
        for host, path, role, site in members:
            url = link03.url() if host == "app03" else coordinator.url
            enrolled = run_cli("drill-agent", "enrol", "-c", path, "--coordinator", url, "--token",
                               coordinator.token(role), "--server-fingerprint", coordinator.fingerprint, "--site", site)
            assert enrolled.returncode == 0, enrolled.stderr
        fingerprint = coordinator.fingerprint
        store = open_store(postgres_ledger)
        # The coordinator is down while the hosts start: they work alone and deliver once it is back.
        with contextlib.ExitStack() as hosts:
            for host, path in [*agents.items(), *((SCRATCH_HOSTS[s], p) for s, p in scratches.items())]:
                hosts.enter_context(running_agent(path, os.path.join(root, f"{host}.log")))
            with serving(config, log) as restarted:
                assert restarted.fingerprint == fingerprint and restarted.url.endswith(f":{port}")
                wait_for("three backup records", lambda: _count(store, "backup") == 3)
                ids = {a.host: a.agent_id for a in enrolment.list_agents(store)}
                _plan_runs_every_target_on_the_scratch_host_of_its_site(restarted, store, ids)
                _a_day_cut_off_loses_nothing(agents["app03"], link03, store)
                drill = subprocess_drill(config)
                wait_for("scratch-city to take the three drill jobs",
                         lambda: len(queue.list_jobs(store, state="running")) == 3)
                os.kill(restarted.process.pid, signal.SIGKILL)  # mid-drill
                restarted.process.wait()
            with serving(config, log):
                out, err = drill.communicate(timeout=300)
        assert drill.returncode == 0, out + err
        result = json.loads(out)
        assert result["verdict"] == "passed"
        steps = [signing.envelope_payload(json.loads(row[0])) for row in store.query(
            "SELECT envelope FROM ledger_entries WHERE kind = 'drill.step'")]
        # one per system, none doubled, the day app03 spent cut off inside its RPO
        assert sorted((s["system"], s["rpo_met"], s["rto_met"]) for s in steps) == [
            (host, True, True) for host in ("app01", "app02", "app03")]
        drilled = [signing.envelope_payload(json.loads(row[0])) for row in store.query(
            "SELECT envelope FROM ledger_entries WHERE kind = 'verify' AND host = 'scratch-city' ORDER BY idx")][-3:]
        assert all(v["drill_id"] for v in drilled)
        timings = sorted((v["timings"] for v in drilled), key=lambda t: t["started"])
        assert timings[1]["started"] < timings[0]["finished"]  # restored side by side, not one after the other
        store.close()


def _count(store: Store, kind: str, host: str | None = None) -> int:
    """How many ledger entries of ``kind`` (from ``host``) the PostgreSQL ledger holds."""
    if host is None:
        return len(store.query("SELECT 1 FROM ledger_entries WHERE kind = %s", (kind,)))
    return len(store.query("SELECT 1 FROM ledger_entries WHERE kind = %s AND host = %s", (kind, host)))


def _plan_runs_every_target_on_the_scratch_host_of_its_site(coordinator: Coordinator, store: Store,
                                                           ids: dict[str, str]) -> None:
    planned = json.loads(coordinator.ctl("plan", "run", "--json").stdout)
    verifies = sorted((j["host"], j["site"]) for j in planned["jobs"] if j["kind"] == "verify")
    assert verifies == sorted((h, s) for h in ("app01", "app02", "app03") for s in ("local", "same-city"))

    def finished() -> list[queue.QueuedJob] | None:
        jobs = queue.list_jobs(store)
        return jobs if jobs and all(j.state not in ("queued", "running") for j in jobs) else None
    jobs = wait_for("both scratch hosts to run the plan", finished, timeout=300)
    assert {(j.state, j.outcome) for j in jobs} == {("done", "passed")}, [j.to_json() for j in jobs]
    for job in jobs:
        assert job.site and job.claimed_by == ids[SCRATCH_HOSTS[job.site]], job.to_json()
    assert len([j for j in jobs if j.kind == "verify"]) == 6


def _a_day_cut_off_loses_nothing(agent: str, link: Relay, store: Store) -> None:
    """app03 loses the coordinator (S3 stays reachable) and backs up through the day; when the link is back, every
    record of the day arrives, in the order made, once."""
    link.cut()
    levels = ["incremental", "differential", "incremental"]
    for level in levels:
        done = run_cli("drill-agent", "backup", "-c", agent, "-p", "nightly", "--level", level)
        assert done.returncode == 0, done.stderr
    wait_for("app03 to try the cut link", lambda: link.refused > 0)
    assert _count(store, "backup", "app03") == 1  # the day's records are still at home
    link.mend()
    wait_for("the day's records", lambda: _count(store, "backup", "app03") == 4, timeout=180)
    made = [signing.envelope_payload(json.loads(row[0])) for row in store.query(
        "SELECT envelope FROM ledger_entries WHERE kind = 'backup' AND host = 'app03' ORDER BY idx")]
    assert [m["level"]["requested"] for m in made] == ["full", *levels]
    started = [m["timings"]["started"] for m in made]
    assert started == sorted(started)


def subprocess_drill(config: str) -> subprocess.Popen[str]:
    program = shutil.which("drillctl")
    assert program
    return subprocess.Popen([program, "drill", "run", "-c", config, "--site", "same-city", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_scratch_host_killed_mid_job_loses_its_lease_and_another_one_finishes_the_job(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    root = workspace_once.root
    repository = workspace_once.local_repository("main") | {"site": "local"}
    agent = _agent(workspace_once, "app01", "127.0.0.2", {"local": repository,
                                                         "same-city": workspace_once.local_repository("city")})
    data = os.path.join(root, "app01-data")
    write_files(data, {f"bulk/{i}.bin": os.urandom(1 << 20) for i in range(48)})  # long enough to be killed in
    scratches = [_scratch(workspace_once, f"scratch{n}", f"127.0.0.{6 + n}", {"copy": repository}, scratch_dir, 1)
                 for n in (1, 2)]
    config = write_coordinator_config(root, free_port())
    with serving(config, os.path.join(root, "serve.log")) as coordinator:
        assert run_cli("drill-agent", "init", "-c", agent).returncode == 0
        assert run_cli("drill-agent", "backup", "-c", agent, "-p", "nightly", "--level", "full").returncode == 0
        for path, role in ((agent, "agent"), *((s, "scratch") for s in scratches)):
            enrolled = run_cli("drill-agent", "enrol", "-c", path, "--coordinator", coordinator.url, "--token",
                               coordinator.token(role), "--server-fingerprint", coordinator.fingerprint,
                               "--site", "local")
            assert enrolled.returncode == 0, enrolled.stderr
        store = open_store(load_drill_config(config).ledger_url)
        with running_agent(agent, os.path.join(root, "app01.log")):
            wait_for("the backup record", lambda: store.query("SELECT 1 FROM ledger_entries WHERE kind = 'backup'"))
        planned = json.loads(coordinator.ctl("plan", "run", "--json").stdout)
        verify_jobs = [queued for queued, job in zip(planned["queued"], planned["jobs"], strict=True)
                       if job["kind"] == "verify"]
        assert len(verify_jobs) == 1, planned
        [job_id] = verify_jobs
        first = running_agent(scratches[0], os.path.join(root, "scratch1.log"))
        process = first.__enter__()

        def claimed() -> bool:
            return any(j.job_id == job_id and j.state == "running" for j in queue.list_jobs(store))
        wait_for("the first scratch host to take the job", claimed, every=0.05)
        os.kill(process.pid, signal.SIGKILL)  # mid-job: no record, no word to the coordinator
        first.__exit__(None, None, None)
        with running_agent(scratches[1], os.path.join(root, "scratch2.log")):
            def finished() -> queue.QueuedJob | None:
                [job] = [j for j in queue.list_jobs(store) if j.job_id == job_id]
                return job if job.state not in ("queued", "running") else None
            job = wait_for("the job to be taken again and finished", finished, timeout=240)
        second = next(a for a in enrolment.list_agents(store) if a.host == "scratch2")
        assert (job.state, job.outcome, job.attempts, job.claimed_by) == ("done", "passed", 2, second.agent_id)
        store.close()


def test_serve_makes_the_nights_plan_once_in_a_process_of_its_own(tmp_path: pathlib.Path) -> None:
    hour = time.localtime().tm_hour
    window = {"window": f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"}  # now is inside it
    log = str(tmp_path / "serve.log")
    with http_receiver() as deadman:
        config = write_coordinator_config(str(tmp_path), free_port(), verification=window,
                                          notifications={"deadman_url": f"{deadman.url}/ping"})
        with serving(config, log):
            def planned() -> bool:
                with open(log) as written:
                    return "the plan of the night" in written.read()
            wait_for("serve to plan the night", planned, timeout=60)
            [ping] = wait_for("the dead-man's switch to be pinged", lambda: deadman.on("/ping"), timeout=30)
    assert json.loads(ping.body)["event"] == "heartbeat" and "0 job(s) queued" in json.loads(ping.body)["message"]
    store = open_store(load_drill_config(config).ledger_url)
    nights = store.query("SELECT night, jobs FROM fleet_nights")
    store.close()
    assert len(nights) == 1 and nights[0][1] == 0  # planned once; nothing enrolled, nothing queued


def test_two_coordinators_on_one_postgres_hand_out_each_job_once(tmp_path: pathlib.Path, postgres_ledger: str) -> None:
    """Two ``drillctl serve`` on one database and one state dir (one key, one certificate), many scratch hosts
    polling both at once through signed HTTPS requests: every job is handed out exactly once."""
    first = write_coordinator_config(str(tmp_path), free_port(), ledger=postgres_ledger)
    with open(first) as handle:
        document = yaml.safe_load(handle)
    second = _write(str(tmp_path / "second.yaml"), {**document, "listen": f"127.0.0.1:{free_port()}"})
    with serving(first, str(tmp_path / "serve1.log")) as one, serving(second, str(tmp_path / "serve2.log")) as two:
        assert one.fingerprint == two.fingerprint
        store = open_store(postgres_ledger)
        hosts = []
        for number in range(8):
            key = signing.generate_key()
            row = enrolment.enrol(store, one.token("scratch"), enrolment.Enrolment(
                signing.public_pem(key.public), f"scratch{number}", "scratch", "local",
                Inventory(host=f"scratch{number}", repositories={"main": {"site": "local", "id": "ab" * 32}}),
                "test", 64), digest="sha256", approval=False, now=time.time())
            hosts.append((row, key))
        jobs = {queue.enqueue(store, {"kind": "verify", "target": f"t{i}", "target_kind": "files",
                                      "backup_host": "app01"}, reason="test", now=time.time(), lifetime=600,
                              site="local", repository_id="ab" * 32) for i in range(150)}
        handed: list[str] = []
        by_coordinator = [0, 0]
        lock = threading.Lock()

        def poll(index: int) -> None:
            row, key = hosts[index % len(hosts)]
            coordinator = (one, two)[index % 2]
            link = Link(coordinator.url, coordinator.fingerprint, key, row.agent_id, f"127.0.1.{index + 1}")
            for _ in range(100):
                answer = link.post("/v1/poll", {"running": [], "free": 3})
                if not answer["jobs"]:
                    return
                with lock:
                    handed.extend(signing.envelope_payload(job)["id"] for job in answer["jobs"])
                    by_coordinator[index % 2] += len(answer["jobs"])

        threads = [threading.Thread(target=poll, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        store.close()
    assert sorted(handed) == sorted(jobs)  # each once, none twice, none lost
    assert min(by_coordinator) > 0, by_coordinator  # both coordinators handed jobs out
