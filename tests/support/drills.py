"""A small estate for drill tests: one agent with a files target (and optionally PostgreSQL), two sites."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

import yaml

from tests.support.configs import write_files
from tests.support.databases import ThrowawayDatabase


@dataclass
class Estate:
    root: str
    agent_config: str
    drill_config: str


def make_estate(root: str, restic: str, scratch: str, *, db: ThrowawayDatabase | None = None,
                ledger: str | None = None, extra_targets: dict[str, Any] | None = None) -> Estate:
    """Write configs, back up at full level and replicate to the same-city site."""
    data = os.path.join(root, "data")
    write_files(data, {f"d{i % 3}/f{i}.bin": os.urandom(3000 + i) for i in range(30)})
    password = os.path.join(root, "restic.pw")
    with open(password, "w") as handle:
        handle.write("drill-test-password\n")
    os.chmod(password, 0o600)
    targets: dict[str, Any] = {"documents": {"kind": "files", "paths": [data]}}
    if db is not None:
        db_password = os.path.join(root, "pg.pw")
        with open(db_password, "w") as handle:
            handle.write(db.password + "\n")
        os.chmod(db_password, 0o600)
        targets["appdb"] = {"kind": "postgres", "user": db.role, "password_file": db_password,
                            "databases": [db.name], "globals": False}
    agent = {
        "host": "app01", "state_dir": os.path.join(root, "agent-state"), "restic": {"binary": restic},
        "repositories": {"local": {"url": os.path.join(root, "repo-local"), "password_file": password},
                         "same-city": {"url": os.path.join(root, "repo-far"), "password_file": password}},
        "targets": {**targets, **(extra_targets or {})},
        "policies": {"nightly": {"targets": sorted(targets), "repository": "local", "replicate_to": ["same-city"]}},
        "scratch": {"directory": scratch},
    }
    agent_config = os.path.join(root, "agent.yaml")
    with open(agent_config, "w") as handle:
        yaml.safe_dump(agent, handle)
    drill: dict[str, Any] = {"state_dir": os.path.join(root, "coordinator"),
                             "systems": {"app01": {"agent_config": agent_config}}}
    if ledger:
        drill["ledger"] = ledger
    drill_config = os.path.join(root, "drill.yaml")
    with open(drill_config, "w") as handle:
        yaml.safe_dump(drill, handle)
    subprocess.run(["drill-agent", "init", "-c", agent_config], check=True, capture_output=True)
    subprocess.run(["drill-agent", "backup", "-c", agent_config, "-p", "nightly", "--level", "full", "-q"],
                   check=True, capture_output=True)
    return Estate(root, agent_config, drill_config)


def drillctl(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["drillctl", *args], capture_output=True, text=True, check=check)
