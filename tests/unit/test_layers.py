"""The layer rule drill → agents → {policies, targets}, the coordinator reaching the agent only through its
door (``agents.api``) and the contract (``agents.contract``), and every module importing on its own."""

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


# What of the agent the coordinator may import: its door and the contract, as it will over the network.
AGENT_SURFACE = ("agents.api", "agents.contract")


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every project module ``path`` imports (``from agents import api`` counts as ``agents.api``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _imported_packages(path: pathlib.Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path)}


def _outside_the_agent_surface(path: pathlib.Path) -> set[str]:
    agents = {name for name in _imported_modules(path) if name.split(".")[0] == "agents"}
    return {name for name in agents if not any(name == s or name.startswith(s + ".") for s in AGENT_SURFACE)}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: pathlib.Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = _imported_packages(path) - ALLOWED[package]
    assert not wrong, f"{path.relative_to(ROOT)} ({package}) must not import {sorted(wrong)}"


@pytest.mark.parametrize("path", [p for p in _modules() if p.relative_to(ROOT).parts[0] == "drill"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_coordinator_reaches_the_agent_only_through_its_door_and_the_contract(path: pathlib.Path) -> None:
    wrong = _outside_the_agent_surface(path)
    assert not wrong, f"{path.relative_to(ROOT)} imports agent internals {sorted(wrong)}; use agents.api or " \
                      "agents.contract"


def test_the_rule_checker_catches_a_wrong_import(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from drill.cli import main\nimport agents.process\nfrom agents import api, records\n"
                   "from agents.contract.records import Record\n")
    assert _imported_packages(bad) == {"drill", "agents"}
    assert _outside_the_agent_surface(bad) == {"agents.process", "agents.records"}


def test_every_module_imports_on_its_own() -> None:
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _modules()
    ]
    script = (  # one fresh interpreter per module, two at a time
        "import concurrent.futures, subprocess, sys\n"
        "def load(name):\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    return (name, r.stderr.strip().splitlines()[-1]) if r.returncode else None\n"
        "with concurrent.futures.ThreadPoolExecutor(2) as pool:\n"
        "    failed = [f for f in pool.map(load, sys.argv[1:]) if f]\n"
        "print(failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout
