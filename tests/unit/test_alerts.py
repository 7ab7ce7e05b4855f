"""The alert rules of docs/alerts.yml: valid for Prometheus, and each fires on what it should (promtool)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: bash scripts/setup.sh installs Debian's prometheus package", pytrace=False)
    return found


@pytest.mark.parametrize("argv", [["check", "rules", "docs/alerts.yml"],
                                  ["test", "rules", "tests/fixtures/alerts_test.yml"]], ids=["check", "test"])
def test_promtool_accepts_the_alert_rules(argv: list[str]) -> None:
    done = subprocess.run([_promtool(), *argv], capture_output=True, text=True, cwd=REPOSITORY, check=False)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
