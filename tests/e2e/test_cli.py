"""The command lines end to end: drill-agent and drillctl as an operator runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.components import find_restic
from tests.support.configs import Workspace, write_files
from tests.support.databases import admin_connection, mysql_admin


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install the project (bash scripts/setup.sh)", pytrace=False)
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool(argv[0]), *argv[1:]], capture_output=True, text=True, check=False, timeout=600)


def test_config_example_and_validate(tmp_path: os.PathLike[str]) -> None:
    example = _run("drill-agent", "config", "example")
    assert example.returncode == 0
    document = yaml.safe_load(example.stdout)
    for repository in document["repositories"].values():
        repository["password_file"] = os.path.join(tmp_path, "pw")
        repository["env_file"] = os.path.join(tmp_path, "s3.env")
    with open(os.path.join(tmp_path, "pw"), "w") as handle:
        handle.write("x\n")
    with open(os.path.join(tmp_path, "s3.env"), "w") as handle:
        handle.write("AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n")
    good = os.path.join(tmp_path, "good.yaml")
    with open(good, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    ok = _run("drill-agent", "config", "validate", good, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True

    bad = os.path.join(tmp_path, "bad.yaml")
    with open(good) as source, open(bad, "w") as handle:
        handle.write(source.read().replace("repository: local", "repository: nowhere"))
    failed = _run("drill-agent", "config", "validate", bad)
    assert failed.returncode == 2
    assert "policies.nightly.repository: unknown repository 'nowhere'" in failed.stderr
    assert f"{bad}:" in failed.stderr
    as_json = json.loads(_run("drill-agent", "config", "validate", bad, "--json").stdout)
    assert as_json["valid"] is False and as_json["problems"][0]["line"] > 0


def test_init_backup_snapshots(workspace: Workspace) -> None:
    write_files(workspace.data, {"a.txt": "alpha", "b/c.txt": "gamma"})
    path = workspace.write_config({"local": workspace.local_repository("local")})
    first = _run("drill-agent", "init", "--config", path, "--json")
    assert first.returncode == 0
    initialised = json.loads(first.stdout)
    [repository] = initialised["repositories"]
    assert repository["repository"] == "local" and repository["created"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", repository["agent_key"])  # made at init, not at the first job
    assert initialised["signing_key"]["created"] is True
    again = json.loads(_run("drill-agent", "init", "--config", path, "--json").stdout)
    assert again["repositories"] == [{"repository": "local", "created": False, "agent_key": repository["agent_key"]}]
    assert again["signing_key"] == {"keyid": initialised["signing_key"]["keyid"], "created": False}

    backup = _run("drill-agent", "backup", "--config", path, "--policy", "nightly", "--level", "full", "--json")
    assert backup.returncode == 0, backup.stderr
    [record] = json.loads(backup.stdout)
    assert record["outcome"] == "success" and record["manifest"]["files"] == 2

    human = _run("drill-agent", "backup", "--config", path, "--policy", "nightly", "--level", "incremental")
    assert human.returncode == 0
    assert human.stdout.startswith("SUCCESS  nightly/documents  level incremental")

    listed = json.loads(_run("drill-agent", "snapshots", "--config", path, "--json").stdout)
    assert [row["level"] for row in listed] == ["full", "incremental"]
    assert listed[0]["manifest_digest"] == record["manifest"]["digest"]
    assert listed[1]["base"] == record["snapshot"]["id"]

    outbox = json.loads(_run("drillctl", "outbox", "--state-dir", workspace.state_dir, "--json").stdout)
    assert outbox[0]["job"]["id"] == record["job"]["id"]
    assert len(outbox) == 2


def test_bad_usage_exits_2(workspace: Workspace) -> None:
    path = workspace.write_config({"local": workspace.local_repository("local")})
    unknown = _run("drill-agent", "backup", "--config", path, "--policy", "weekly")
    assert unknown.returncode == 2 and "unknown policy 'weekly'" in unknown.stderr
    missing = _run("drill-agent", "backup", "--config", os.path.join(workspace.root, "nope.yaml"), "--policy", "x")
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr


def test_failed_backup_exits_1_with_a_failed_record(workspace: Workspace) -> None:
    write_files(workspace.data, {"a": "1"})
    path = workspace.write_config({"local": workspace.local_repository("never-initialised")})
    result = _run("drill-agent", "backup", "--config", path, "--policy", "nightly", "--json")
    assert result.returncode == 1
    [record] = json.loads(result.stdout)
    assert record["outcome"] == "failed"
    assert record["findings"][0]["code"] == "repository_missing"


def _drop_demo_databases() -> None:
    with admin_connection() as admin:
        admin.execute("DROP DATABASE IF EXISTS drill_demo WITH (FORCE)")
    connection = mysql_admin()
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("DROP DATABASE IF EXISTS drill_demo")
    connection.close()  # type: ignore[attr-defined]


def test_demo_runs_the_whole_story(tmp_path: os.PathLike[str]) -> None:
    # The README's first command, on the distro restic it uses; every step of the story has its own test on both
    # restic versions.
    try:
        result = _run("drillctl", "demo", "--dir", os.path.join(tmp_path, "demo"), "--restic", find_restic("0.14"),
                      "--json")
    finally:
        _drop_demo_databases()
    assert result.returncode == 0, result.stderr
    demo = json.loads(result.stdout)
    assert demo["ok"] is True
    files = [r for r in demo["backups"] if r["target"]["name"] == "documents"]
    assert [r["level"]["effective"] for r in files] == ["full", "differential", "incremental"]
    assert files[1]["manifest"]["reused_hashes"] > 0
    # This machine runs PostgreSQL and MariaDB: the demo backs them up too, at every level.
    assert {r["target"]["name"] for r in demo["backups"]} == {"documents", "appdb", "crm"}
    assert all(r["outcome"] == "success" and r["replication"][0]["verified"] for r in demo["backups"])
    assert {v["verdict"] for v in demo["verifications"]} == {"passed"} and len(demo["verifications"]) == 3
    assert demo["drill"]["verdict"] == "passed" and demo["drill"]["site"] == "same-city"
    assert demo["bundle_intact"] is True and os.path.isfile(demo["bundle"])
    assert [os.path.basename(p).split(".", 1)[1] for p in demo["reports"]] == ["zh-CN.html", "en.html", "zh-CN.pdf"]
