"""Writing agent configs and their secret files into a test's tmp folder."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

import yaml

from agents.config.model import AgentConfig, load_config
from tests.support.components import S3Server


@dataclass
class Workspace:
    """A test's folder with a password file, data and a config writer."""

    root: str
    restic: str

    def __post_init__(self) -> None:
        self.password_file = os.path.join(self.root, "restic.pw")
        with open(self.password_file, "w") as handle:
            handle.write(secrets.token_hex(12) + "\n")
        os.chmod(self.password_file, 0o600)
        self.data = os.path.join(self.root, "data")
        os.makedirs(self.data, exist_ok=True)
        self.state_dir = os.path.join(self.root, "state")

    def local_repository(self, name: str) -> dict[str, Any]:
        return {"url": os.path.join(self.root, f"repo-{name}"), "password_file": self.password_file}

    def s3_repository(self, server: S3Server, bucket: str, prefix: str, **extra: Any) -> dict[str, Any]:
        env_file = os.path.join(self.root, f"s3-{server.port}.env")
        with open(env_file, "w") as handle:
            handle.write(server.env_text())
        os.chmod(env_file, 0o600)
        return {"url": server.url(bucket, prefix), "password_file": self.password_file, "env_file": env_file, **extra}

    def write_config(
        self,
        repositories: dict[str, Any],
        *,
        targets: dict[str, Any] | None = None,
        policies: dict[str, Any] | None = None,
        host: str = "testhost",
        name: str = "agent.yaml",
        scratch: dict[str, Any] | None = None,
    ) -> str:
        document = {
            "host": host,
            "state_dir": self.state_dir,
            "restic": {"binary": self.restic},
            "repositories": repositories,
            "targets": targets or {"documents": {"kind": "files", "paths": [self.data], "exclude": ["*.tmp"]}},
            "policies": policies
            or {"nightly": {"targets": ["documents"], "repository": next(iter(repositories))}},
        }
        if scratch is not None:
            document["scratch"] = scratch
        path = os.path.join(self.root, name)
        with open(path, "w") as handle:
            yaml.safe_dump(document, handle, sort_keys=False)
        return path

    def load(self, path: str) -> AgentConfig:
        return load_config(path)


def write_files(root: str, files: dict[str, bytes | str]) -> None:
    """Create files (relative path → content) under ``root``."""
    for relative, content in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content.encode() if isinstance(content, str) else content)
