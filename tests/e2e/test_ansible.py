"""The Ansible roles, run for real against this machine (``-c local``): a coordinator, an agent and a scratch host,
each "host" installed under its own prefix, drill from a wheel built from this checkout, secrets from an encrypted
vault. Then the installed programs are started from their units' ExecStart lines (PID 1 here is not systemd) and
do their work: a backup lands in the coordinator's ledger and the scratch host verifies it."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pymysql
import pytest
import yaml

from agents.contract import signing
from tests.support.configs import write_files
from tests.support.databases import empty_database
from tests.support.fleet import free_port, stop, wait_for

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE = REPOSITORY / "ansible"
USER = "drillansible"  # the service account the roles create for this test, removed afterwards
HOSTS = ("coord", "app01", "scratch01")


def _tool(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):
        pytest.fail(f"{name} is missing: bash scripts/setup.sh installs ansible-core and ansible-lint", pytrace=False)
    return path


@dataclass
class Deployment:
    root: str
    inventory: str
    vault_password: str
    ledger: str
    log: str

    def prefix(self, host: str) -> str:
        return os.path.join(self.root, host)

    def playbook(self, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [_tool("ansible-playbook"), "-i", self.inventory, str(ANSIBLE / "site.yml"),
                "--vault-password-file", self.vault_password, "-f", "1", *extra]
        env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCAL_TEMP": os.path.join(self.root, "ansible-tmp")}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(ANSIBLE), timeout=900,
                              check=False)
        with open(self.log, "a") as out:
            out.write(f"$ {shlex.join(argv)}\n{done.stdout}\n{done.stderr}\n")
        return done

    def installed(self, program: str) -> str:
        return os.path.join(self.root, "opt", "drill", "venv", "bin", program)

    def as_service(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", USER, "--", *argv], capture_output=True, text=True, timeout=300,
                              check=False)


def _recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of ansible-playbook's output: host → {ok, changed, failed, ...}."""
    recap = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            recap[match[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match[2])}
    return recap


def _unit(path: str) -> tuple[list[str], str]:
    """The ExecStart argv and User of a systemd unit file."""
    text = pathlib.Path(path).read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", text, re.M)
    user = re.search(r"^User=(.+)$", text, re.M)
    assert exec_start and user, text
    return shlex.split(exec_start[1]), user[1].strip()


def _start(unit: str, log: str) -> subprocess.Popen[str]:
    """Start what ``unit`` starts, as its User, the way systemd would (minus the sandboxing)."""
    argv, user = _unit(unit)
    with open(log, "a") as out:
        return subprocess.Popen(["runuser", "-u", user, "--", *argv], stdout=out, stderr=subprocess.STDOUT,
                                text=True)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = tempfile.mkdtemp(prefix="drill-ansible-", dir="/tmp")
    os.chmod(root, 0o755)  # the service account traverses it, as it would /opt and /etc
    try:
        with empty_database("drill_ansible") as ledger:
            yield _prepare(root, ledger)
    finally:
        subprocess.run(["userdel", USER], capture_output=True, check=False)
        subprocess.run(["groupdel", USER], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _prepare(root: str, ledger: str) -> Deployment:
    wheels = os.path.join(root, "wheels")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, str(REPOSITORY)],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    data = os.path.join(root, "app01-data")
    write_files(data, {"report.txt": "quarterly figures\n" * 100, "conf/app.ini": "[app]\nmode=prod\n"})
    repos = os.path.join(root, "repos")
    os.makedirs(repos)
    os.chmod(repos, 0o1777)  # the service account makes its repositories here, as it would on its S3 bucket
    port = free_port()
    hour = (time.localtime().tm_hour + 6) % 24  # the nightly window hours away: the test runs the plan itself
    repository = {"url": os.path.join(repos, "app01-local"), "site": "local"}
    group_vars = {
        "all/main": {
            "drill_user": USER, "drill_group": USER, "drill_venv": os.path.join(root, "opt", "drill", "venv"),
            "drill_wheel_dir": wheels, "drill_service_manager": "none", "drill_manage_packages": False,
            "drill_restic_binary": shutil.which("restic"), "drill_python": "/usr/bin/python3"},
        "drill_coordinator": {
            "drill_coordinator_listen": f"127.0.0.1:{port}", "drill_coordinator_ledger": ledger,
            "drill_coordinator_fleet": {"poll_seconds": 1, "lease": "20s"},
            "drill_coordinator_verification": {"window": f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"}},
        "drill_agents": {
            "drill_agent_repositories": {"local": repository},
            "drill_agent_repository_passwords": {"local": "{{ vault_restic_password }}"},
            "drill_agent_targets": {"documents": {"kind": "files", "paths": [data]}},
            "drill_agent_policies": {"nightly": {"targets": ["documents"], "repository": "local"}},
            "drill_agent_fleet": {"source_address": "127.0.0.2"},
            "drill_agent_read_write_paths": [repos],
            "drill_agent_database_users": [
                {"engine": "postgresql", "name": "drill_ansible_backup", "password": "{{ vault_database_password }}"},
                {"engine": "mariadb", "name": "drill_ansible_backup", "password": "{{ vault_database_password }}"}]},
        "drill_scratch": {
            "drill_scratch_site": "local", "drill_scratch_repositories": {"app01-local": repository},
            "drill_scratch_repository_passwords": {"app01-local": "{{ vault_restic_password }}"},
            "drill_scratch_directory": os.path.join(root, "scratch"),
            "drill_scratch_fleet": {"source_address": "127.0.0.3", "capacity": 1}},
    }
    inventory = os.path.join(root, "inventory")
    for name, document in group_vars.items():
        path = os.path.join(inventory, "group_vars", f"{name}.yml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            yaml.safe_dump(document, handle)
    vault_password = os.path.join(root, "vault.pw")
    pathlib.Path(vault_password).write_text("vault-" + os.urandom(12).hex())
    vault = os.path.join(inventory, "group_vars", "all", "vault.yml")
    restic_password = "restic-" + os.urandom(12).hex()
    with open(vault, "w") as handle:
        yaml.safe_dump({"vault_restic_password": restic_password,
                        "vault_database_password": "pg-" + os.urandom(8).hex()}, handle)
    encrypted = subprocess.run([_tool("ansible-vault"), "encrypt", "--vault-password-file", vault_password, vault],
                               capture_output=True, text=True, check=False)
    assert encrypted.returncode == 0, encrypted.stderr
    assert restic_password not in pathlib.Path(vault).read_text()
    hosts = os.path.join(inventory, "hosts.ini")
    groups = {"drill_coordinator": "coord", "drill_agents": "app01", "drill_scratch": "scratch01"}
    with open(hosts, "w") as handle:
        for group, host in groups.items():
            handle.write(f"[{group}]\n{host} drill_install_root={os.path.join(root, host)}\n\n")
        # Every "host" is this machine, and the play runs as root already: no become, no ssh.
        handle.write(f"[all:vars]\nansible_connection=local\nansible_become=false\n"
                     f"ansible_python_interpreter={sys.executable}\n")
    return Deployment(root, inventory, vault_password, ledger, os.path.join(root, "ansible.log"))


def test_ansible_lint_passes_the_production_profile() -> None:
    done = subprocess.run([_tool("ansible-lint"), "--profile", "production", "--nocolor"], capture_output=True,
                          text=True, cwd=str(ANSIBLE), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_roles_deploy_a_fleet_that_backs_up_and_verifies_and_a_second_run_changes_nothing(
    deployment: Deployment,
) -> None:
    first = deployment.playbook("--limit", "drill_coordinator")
    assert first.returncode == 0, first.stdout[-3000:]
    coordinator_unit = os.path.join(deployment.prefix("coord"), "etc/systemd/system/drillctl-serve.service")
    serve = _start(coordinator_unit, os.path.join(deployment.root, "serve.log"))
    processes = [serve]
    try:
        config = os.path.join(deployment.prefix("coord"), "etc/drill/coordinator.yaml")
        fingerprint = deployment.as_service(deployment.installed("drillctl"), "fingerprint", "-c", config, "--json")
        assert fingerprint.returncode == 0, fingerprint.stderr

        def listening() -> bool:
            health = deployment.as_service(deployment.installed("drillctl"), "agents", "list", "-c", config)
            return health.returncode == 0 and serve.poll() is None
        wait_for("the installed coordinator", listening, timeout=60)
        time.sleep(1)

        second = deployment.playbook()
        assert second.returncode == 0, second.stdout[-3000:]
        assert _recap(second.stdout)["app01"]["changed"] > 0
        third = deployment.playbook()
        assert third.returncode == 0, third.stdout[-3000:]
        recap = _recap(third.stdout)
        assert set(recap) == set(HOSTS) and all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap

        _installed_as_asked(deployment)
        agent_unit = os.path.join(deployment.prefix("app01"), "etc/systemd/system/drill-agent.service")
        scratch_unit = os.path.join(deployment.prefix("scratch01"), "etc/systemd/system/drill-agent.service")
        for unit in (coordinator_unit, agent_unit, scratch_unit):
            checked = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                                     check=False)
            assert checked.returncode == 0, checked.stderr
        assert _unit(agent_unit)[1] == USER and _unit(scratch_unit)[1] == "root"
        processes.append(_start(agent_unit, os.path.join(deployment.root, "app01.log")))
        processes.append(_start(scratch_unit, os.path.join(deployment.root, "scratch01.log")))
        agent_config = os.path.join(deployment.prefix("app01"), "etc/drill-agent/agent.yaml")
        backup = deployment.as_service(deployment.installed("drill-agent"), "backup", "-c", agent_config, "-p",
                                       "nightly", "--level", "full")
        assert backup.returncode == 0, backup.stdout + backup.stderr
        with psycopg.connect(deployment.ledger, autocommit=True) as ledger:
            def recorded() -> bool:
                return bool(ledger.execute(
                    "SELECT 1 FROM ledger_entries WHERE kind = 'backup' AND host = 'app01'").fetchall())
            wait_for("app01's backup record in the installed coordinator's ledger", recorded)
            planned = deployment.as_service(deployment.installed("drillctl"), "plan", "run", "-c", config, "--json")
            assert planned.returncode == 0, planned.stderr
            assert [j["kind"] for j in json.loads(planned.stdout)["jobs"]].count("verify") == 1

            def verified() -> list[tuple[str, str]]:
                return [(host, str(envelope)) for host, envelope in ledger.execute(
                    "SELECT host, envelope FROM ledger_entries WHERE kind = 'verify'").fetchall()]
            [(host, envelope)] = wait_for("scratch01 to verify the backup", verified, timeout=180)
        verification = signing.envelope_payload(json.loads(envelope))
        assert host == "scratch01" and verification["verdict"] == "passed", verification.get("findings")
    finally:
        for process in processes:
            stop(process)


def _installed_as_asked(deployment: Deployment) -> None:
    """Modes and owners, no secret on a command line or in the output, the backup account in PostgreSQL."""
    for host, config in (("app01", "etc/drill-agent"), ("scratch01", "etc/drill-agent"), ("coord", "etc/drill")):
        directory = os.path.join(deployment.prefix(host), config)
        assert os.stat(directory).st_mode & 0o777 == 0o750
    secrets = os.path.join(deployment.prefix("app01"), "etc/drill-agent/secrets/local.password")
    status = os.stat(secrets)
    assert status.st_mode & 0o777 == 0o600 and status.st_uid != 0
    state = os.path.join(deployment.prefix("app01"), "var/lib/drill-agent")
    assert os.stat(state).st_mode & 0o777 == 0o700
    shell = subprocess.run(["getent", "passwd", USER], capture_output=True, text=True, check=False).stdout
    assert shell.strip().endswith(":/usr/sbin/nologin")
    password = pathlib.Path(secrets).read_text().strip()
    with open(deployment.log) as log:
        assert password not in log.read()  # no_log on every task that holds a secret
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        member = admin.execute("SELECT pg_has_role('drill_ansible_backup', 'pg_read_all_data', 'member')").fetchone()
        admin.execute("DROP ROLE IF EXISTS drill_ansible_backup")
    assert member == (True,)
    mariadb = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        with mariadb.cursor() as cursor:
            cursor.execute("SHOW GRANTS FOR 'drill_ansible_backup'@'localhost'")
            grants = " ".join(row[0] for row in cursor.fetchall())
            cursor.execute("DROP USER IF EXISTS 'drill_ansible_backup'@'localhost'")
    finally:
        mariadb.close()
    assert all(g in grants for g in ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "LOCK TABLES", "RELOAD")), grants
    assert "ALL PRIVILEGES" not in grants and "INSERT" not in grants


def test_a_wrong_variable_type_fails_at_argument_validation_with_its_name(deployment: Deployment) -> None:
    done = deployment.playbook("--limit", "drill_agents", "-e", json.dumps({"drill_agent_targets": ["documents"]}))
    assert done.returncode != 0
    assert "argument_spec" in done.stdout.lower() or "validating arguments" in done.stdout.lower(), done.stdout
    assert "drill_agent_targets" in done.stdout and "dict" in done.stdout


def test_a_broken_agent_config_fails_at_validate_and_the_previous_one_stays(deployment: Deployment) -> None:
    config = os.path.join(deployment.prefix("app01"), "etc/drill-agent/agent.yaml")
    before = pathlib.Path(config).read_bytes()
    broken = {"drill_agent_policies": {"nightly": {"targets": ["no-such-target"], "repository": "local"}}}
    done = deployment.playbook("--limit", "drill_agents", "-e", json.dumps(broken))
    assert done.returncode != 0
    assert "failed to validate" in done.stdout and "no-such-target" in done.stdout, done.stdout[-3000:]
    assert pathlib.Path(config).read_bytes() == before
