"""The layer rule drill → agents → {policies, targets}, and every module importing on its own."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("drill", "agents", "policies", "targets")
# What each package may import from the project.
ALLOWED = {
    "drill": {"drill", "agents", "policies", "targets"},
    "agents": {"agents", "policies", "targets"},
    "policies": {"policies"},
    "targets": {"targets"},
}


def _modules() -> list[pathlib.Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _imported_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: pathlib.Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = _imported_packages(path) - ALLOWED[package]
    assert not wrong, f"{path.relative_to(ROOT)} ({package}) must not import {sorted(wrong)}"


def test_the_rule_checker_catches_a_wrong_import(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from drill.cli import main\nimport agents.process\n")
    assert _imported_packages(bad) == {"drill", "agents"}


def test_every_module_imports_on_its_own() -> None:
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _modules()
    ]
    script = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    if r.returncode: failed.append((name, r.stderr.strip().splitlines()[-1]))\n"
        "print(failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout
