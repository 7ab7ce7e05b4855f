"""A coordinator (``drillctl serve``) and agents (``drill-agent run``) as real processes on loopback addresses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from agents.contract import signing
from agents.contract.inventory import Inventory
from agents.fleet.link import Link, LinkError
from drill.config import load_drill_config
from drill.fleet import enrolment
from drill.fleet.enrolment import AgentRow
from drill.fleet.tables import create_fleet_tables
from drill.ledger.store import open_store
from tests.support.processes import run_cli


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 120.0, every: float = 0.3) -> Any:
    """Poll ``condition`` until it returns something true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Coordinator:
    config: str
    url: str
    fingerprint: str
    process: subprocess.Popen[str]
    log: str

    def ctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run_cli("drillctl", *argv, "-c", self.config)

    def token(self, role: str, site: str | None = None) -> str:
        done = self.ctl("agents", "token", "--role", role, *(["--site", site] if site else []))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]


def write_coordinator_config(root: str, port: int, ledger: str | None = None, **extra: Any) -> str:
    # The nightly window is put hours away, so that serve's own nightly plan does not race the test's plan run.
    hour = (time.localtime().tm_hour + 6) % 24
    document: dict[str, Any] = {"state_dir": os.path.join(root, "coordinator"), "listen": f"127.0.0.1:{port}",
                                "fleet": {"poll_seconds": 1, "lease": "20s", "retry_backoff": "1s"},
                                "verification": {"window": f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"}, **extra}
    if ledger:
        document["ledger"] = ledger
    path = os.path.join(root, "coordinator.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(document, handle)
    return path


@contextlib.contextmanager
def serving(config: str, log: str) -> Iterator[Coordinator]:
    """``drillctl serve`` until the block ends (SIGTERM, then waited for)."""
    program = shutil.which("drillctl")
    assert program, "drillctl is not on PATH: bash scripts/setup.sh"
    with open(log, "a") as out:
        process = subprocess.Popen([program, "--log-level", "info", "serve", "-c", config], stdout=subprocess.PIPE,
                                   stderr=out, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().split()[-1]
        fingerprint = process.stdout.readline().strip().split()[-1]
        assert url.startswith("https://") and fingerprint.startswith("sha256:"), (url, fingerprint)
        probe = Link(url, fingerprint, signing.generate_key(), "probe")

        def healthy() -> bool:
            try:
                return bool(probe.get("/healthz").get("status") == "ok")
            except LinkError:
                return process.poll() is not None  # died: the assertion below says so

        wait_for("drillctl serve to answer", healthy, timeout=60)
        with open(log) as written:
            assert process.poll() is None, written.read()
        yield Coordinator(config, url, fingerprint, process, log)
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


@contextlib.contextmanager
def running_agent(config: str, log: str) -> Iterator[subprocess.Popen[str]]:
    """``drill-agent run`` until the block ends."""
    program = shutil.which("drill-agent")
    assert program
    with open(log, "a") as out:
        process = subprocess.Popen([program, "--log-level", "info", "run", "-c", config, "--tick", "1"],
                                   stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        stop(process)


def add_web_accounts(config: str, accounts: dict[str, tuple[str, str]]) -> None:
    """``drillctl users add`` for each name → (role, password), the password on standard input."""
    for name, (role, password) in accounts.items():
        added = run_cli("drillctl", "users", "add", name, "--role", role, "--password-file", "-", "-c", config,
                        input_text=password + "\n")
        assert added.returncode == 0, added.stderr


def enrol_agent(coordinator: Coordinator, inventory: Inventory) -> tuple[AgentRow, signing.SigningKey]:
    """Enrol a simulated agent (a fresh key) straight into the coordinator's database with a real token."""
    store = open_store(load_drill_config(coordinator.config).ledger_url)
    try:
        create_fleet_tables(store)
        key = signing.generate_key()
        row = enrolment.enrol(store, coordinator.token("agent"), enrolment.Enrolment(
            signing.public_pem(key.public), inventory.host, "agent", "local", inventory, "test", 1),
            digest="sha256", approval=False, now=time.time())
    finally:
        store.close()
    return row, key
