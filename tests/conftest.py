"""Shared fixtures. Restic-dependent tests take ``restic_binary`` and run once per restic version."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from agents import process
from tests.support.components import RESTIC_VERSIONS, S3Server, find_restic, running_s3
from tests.support.configs import Workspace


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "restic_version" in metafunc.fixturenames:
        metafunc.parametrize("restic_version", RESTIC_VERSIONS)


@pytest.fixture
def restic_binary(restic_version: str) -> str:
    return find_restic(restic_version)


@pytest.fixture
def workspace(tmp_path: os.PathLike[str], restic_binary: str) -> Workspace:
    return Workspace(str(tmp_path), restic_binary)


@pytest.fixture
def workspace_once(tmp_path: os.PathLike[str]) -> Workspace:
    """A workspace on the distro restic only: for what does not depend on restic's version."""
    return Workspace(str(tmp_path), find_restic("0.14"))


@pytest.fixture
def scratch_dir() -> Iterator[str]:
    """A short scratch parent every user may traverse (throwaway instances run as postgres/mysql)."""
    path = tempfile.mkdtemp(prefix="drill-scratch-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def s3(tmp_path: os.PathLike[str]) -> Iterator[S3Server]:
    with running_s3(os.path.join(str(tmp_path), "s3-data")) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_cancellation() -> Iterator[None]:
    """Each test starts with no pending cancellation (a test may raise one)."""
    process.CANCELLATION.reset()
    yield
    process.CANCELLATION.reset()
