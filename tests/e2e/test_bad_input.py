"""Every command, given bad input, ends with exit 2 and a clear line naming the file -- never a traceback."""

from __future__ import annotations

import os
import pathlib

import pytest

from tests.support.processes import run_cli

AGENT_COMMANDS = [
    ["backup", "-p", "nightly"], ["snapshots"], ["init"], ["run", "--once"],
    ["verify", "-r", "local", "-t", "documents", "--latest"], ["check", "-r", "local"],
]
DRILL_COMMANDS = [
    ["ingest"], ["drill", "list"], ["drill", "run", "--site", "local"], ["drill", "show", "d"],
    ["drill", "resume", "d"], ["drill", "close", "d"], ["keys", "list"], ["ledger", "audit"],
    ["evidence", "export", "--drill", "d", "--out", "/tmp/never-written.zip"], ["report", "drill", "d"],
]


@pytest.fixture
def files(tmp_path: pathlib.Path) -> dict[str, str]:
    """Config files each wrong in one way, and a good agent config."""
    (tmp_path / "pw").write_text("x\n")
    good_agent = tmp_path / "agent.yaml"
    good_agent.write_text(f"host: app01\nstate_dir: {tmp_path}/state\n"
                          f"repositories: {{local: {{url: {tmp_path}/repo, password_file: {tmp_path}/pw}}}}\n"
                          f"targets: {{documents: {{kind: files, paths: [{tmp_path}/data]}}}}\n"
                          "policies: {nightly: {targets: [documents], repository: local}}\n")
    (tmp_path / "a-directory.yaml").mkdir()
    (tmp_path / "not-utf8.yaml").write_bytes(b"\xff\xfestate_dir: x\n")
    (tmp_path / "wrong-type.yaml").write_text("state_dir: 5\nrepositories: []\nsystems: 3\n")
    (tmp_path / "not-yaml.yaml").write_text("state_dir: [unclosed\n")

    def drill(name: str, ledger: str) -> str:
        path = tmp_path / name
        path.write_text(f"state_dir: {tmp_path}/coordinator\nledger: {ledger}\n"
                        f"systems: {{app01: {{agent_config: {good_agent}}}}}\n")
        return str(path)

    return {"missing": str(tmp_path / "nowhere.yaml"), "directory": str(tmp_path / "a-directory.yaml"),
            "not-utf8": str(tmp_path / "not-utf8.yaml"), "wrong-type": str(tmp_path / "wrong-type.yaml"),
            "not-yaml": str(tmp_path / "not-yaml.yaml"), "agent": str(good_agent),
            "bad-ledger-url": drill("mysql-ledger.yaml", "mysql://x"),
            "ledger-is-a-directory": drill("dir-ledger.yaml", f"sqlite:///{tmp_path}/a-directory.yaml"),
            "ledger-unreachable": drill("pg-ledger.yaml", "postgresql://nobody@127.0.0.1:1/none")}


def _assert_clear(result: object, *words: str) -> None:
    code, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in stderr, (word, stderr)


@pytest.mark.parametrize("bad", ["missing", "directory", "not-utf8", "wrong-type", "not-yaml"])
@pytest.mark.parametrize("command", AGENT_COMMANDS, ids=lambda c: c[0])
def test_the_agent_names_a_bad_config(files: dict[str, str], command: list[str], bad: str) -> None:
    _assert_clear(run_cli("drill-agent", command[0], "--config", files[bad], *command[1:]), files[bad])


@pytest.mark.parametrize("bad", ["missing", "not-utf8", "wrong-type", "bad-ledger-url", "ledger-is-a-directory",
                                 "ledger-unreachable"])
@pytest.mark.parametrize("command", DRILL_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_the_coordinator_names_a_bad_config(files: dict[str, str], command: list[str], bad: str) -> None:
    result = run_cli("drillctl", *command, "--config", files[bad])
    words = {"bad-ledger-url": ["unknown ledger URL scheme 'mysql'"],
             "ledger-is-a-directory": ["is a directory"],
             "ledger-unreachable": ["cannot open the PostgreSQL ledger at 127.0.0.1:1/none"]}.get(bad, [files[bad]])
    _assert_clear(result, *words)
    assert not os.path.exists("/tmp/never-written.zip")


def test_bad_values_on_the_command_line_are_named(files: dict[str, str], tmp_path: pathlib.Path) -> None:
    parts = run_cli("drill-agent", "verify", "-c", files["agent"], "-r", "local", "-t", "documents", "--latest",
                    "--read-data-parts", "0")
    _assert_clear(parts, "--read-data-parts", "not between 1 and 256")
    since = run_cli("drillctl", "evidence", "export", "-c", files["bad-ledger-url"], "--since", "notadate",
                    "--out", str(tmp_path / "b.zip"))
    _assert_clear(since, "'notadate' is not a date")
    unknown = run_cli("drill-agent", "verify", "-c", files["agent"], "-r", "far", "-t", "documents", "--latest")
    _assert_clear(unknown, "unknown repository 'far'")
    not_a_bundle = run_cli("drillctl", "evidence", "verify", files["agent"])
    assert not_a_bundle.returncode == 1 and "not a ZIP file" in not_a_bundle.stdout
    assert "Traceback" not in not_a_bundle.stderr
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    drill_config = tmp_path / "ok-drill.yaml"
    drill_config.write_text(f"state_dir: {tmp_path}/coordinator\n"
                            f"systems: {{app01: {{agent_config: {files['agent']}}}}}\n")
    _assert_clear(run_cli("drillctl", "keys", "add", "-c", str(drill_config), "--owner", "x", str(key)),
                  "not a PEM public key")
    _assert_clear(run_cli("drillctl", "keys", "add", "-c", str(drill_config), "--owner", "x",
                          str(tmp_path / "nowhere.pem")), "nowhere.pem")


def test_config_validate_and_an_enrolment_token_file_name_what_is_wrong(
    files: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """What an installer runs: ``drillctl config validate`` (Ansible's validate:) and ``enrol --token-file``."""
    _assert_clear(run_cli("drillctl", "config", "validate", files["wrong-type"]), files["wrong-type"], "state_dir")
    good = tmp_path / "coordinator.yaml"
    good.write_text(f"state_dir: {tmp_path}/coordinator\nlisten: 127.0.0.1:8443\n")
    valid = run_cli("drillctl", "config", "validate", str(good), "--json")
    assert valid.returncode == 0 and '"fleet": true' in valid.stdout
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(good.read_text() + "notifications:\n  webhooks:\n    - {format: json, url: 'file:///etc/passwd'}"
                     "\n  email: {server: smtp:25, from: a@b, to: []}\n")
    _assert_clear(run_cli("drillctl", "config", "validate", str(hooks)), "notifications.webhooks[0].url",
                  "notifications.email.to")
    hooks.write_text(good.read_text() + "notifications:\n  webhooks:\n    - {format: wecom}\n")
    _assert_clear(run_cli("drillctl", "config", "validate", str(hooks)), "notifications.webhooks[0]",
                  "give either url or url_file")
    empty = tmp_path / "token"
    empty.write_text("\n")
    enrol = ["drill-agent", "enrol", "-c", files["agent"], "--coordinator", "https://127.0.0.1:1",
             "--server-fingerprint", "sha256:" + "0" * 64]
    _assert_clear(run_cli(*enrol, "--token-file", str(empty)), "no enrolment token in it")
    _assert_clear(run_cli(*enrol, "--token-file", str(tmp_path / "nowhere")), "nowhere")
    both = run_cli(*enrol, "--token", "t", "--token-file", str(empty))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


GOOD_AGENT = """\
host: app01
state_dir: DIR/state
repositories:
  local: {url: DIR/repo, password_file: DIR/pw}
targets:
  documents: {kind: files, paths: [DIR/data]}
policies:
  nightly: {targets: [documents], repository: local}
"""
LAUGHS = "l0: &l0 [a, a, a, a, a, a, a, a, a]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))

# Each hostile agent config: its text (or the bytes of its file), the line stderr must name, and what it says.
HOSTILE_AGENT: dict[str, tuple[str | bytes, int, str]] = {
    "billion-laughs": (LAUGHS, 2, "an alias (*l0) is not accepted"),
    "recursive-alias": ("host: a\nloop: &x [*x]\n", 2, "an alias (*x) is not accepted"),
    "deep-nesting": ("host: a\nstate_dir: " + "[" * 5000 + "]" * 5000 + "\n", 2, "nested more than 64 levels"),
    "huge-duration": (GOOD_AGENT.replace("local}", "local, max_full_interval: 99999999999999d}"), 8,
                      "longer than 10 years"),
    "nan-timeout": (GOOD_AGENT.replace("DIR/pw}", "DIR/pw, connect_timeout: .nan}"), 4, "not a finite number"),
    "huge-timeout": (GOOD_AGENT.replace("DIR/pw}", "DIR/pw, stall_timeout: 99999999999999999999999}"), 4,
                     "greater than the maximum of 86400"),
    "superscript-calendar": (GOOD_AGENT.replace("repository: local}", "repository: local, "
                                                "schedule: {full: 'monthly ² 03:00'}}"), 8, "day of the month"),
    "target-named-yes": (GOOD_AGENT.replace("documents", "yes"), 8, "quote the word"),
    "env-file-directory": (GOOD_AGENT.replace("DIR/pw}", "DIR/pw, env_file: DIR/a-directory}"), 4,
                           "is a directory, not a regular file"),
    "password-file-directory": (GOOD_AGENT.replace("password_file: DIR/pw", "password_file: DIR/a-directory"), 4,
                                "is a directory, not a regular file"),
    "utf16-with-bom": (GOOD_AGENT.encode("utf-16"), 1, "is UTF-16 text"),
    "utf16-without-bom": (GOOD_AGENT.encode("utf-16-le"), 1, "holds NUL bytes, so it is UTF-16"),
    "not-utf8-on-line-3": (GOOD_AGENT.encode().replace(b"repositories", b"repositori\xe9s"), 3, "is not UTF-8 text"),
}


@pytest.fixture
def hostile(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory with a password file, a directory, and a good agent config (agent.yaml)."""
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "agent.yaml").write_text(GOOD_AGENT.replace("DIR", str(tmp_path)))
    return tmp_path


@pytest.mark.parametrize("name", sorted(HOSTILE_AGENT))
def test_a_hostile_agent_config_is_named_with_its_line(hostile: pathlib.Path, name: str) -> None:
    content, line, words = HOSTILE_AGENT[name]
    path = hostile / f"{name}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("DIR", str(hostile)))
    _assert_clear(run_cli("drill-agent", "config", "validate", str(path), timeout=60), f"{path}:{line}: ", words)


def test_a_fifo_given_as_a_config_is_refused_at_once(hostile: pathlib.Path) -> None:
    fifo = hostile / "fifo.yaml"
    os.mkfifo(fifo)
    agent = run_cli("drill-agent", "config", "validate", str(fifo), timeout=20)
    _assert_clear(agent, str(fifo), "is a FIFO (named pipe), not a regular file")
    drill = run_cli("drillctl", "drill", "list", "-c", str(fifo), timeout=20)
    _assert_clear(drill, str(fifo), "is a FIFO (named pipe), not a regular file")


DRILL_CONFIG = ("state_dir: DIR/coordinator\nobjectives: {rto: 1h, rpo: 24h}\n"
                "systems:\n  app01: {agent_config: DIR/agent.yaml}\n")
HOSTILE_DRILL: dict[str, tuple[str, int, str]] = {
    "state-dir-is-a-file": (DRILL_CONFIG.replace("DIR/coordinator", "DIR/pw"), 1, "exists and is not a directory"),
    "duplicate-key": (DRILL_CONFIG + "state_dir: DIR/elsewhere\n", 5, "key appears twice"),
    "huge-rto": (DRILL_CONFIG.replace("rto: 1h", "rto: 99999999999999999d"), 2, "longer than 10 years"),
    "huge-rpo": (DRILL_CONFIG.replace("rpo: 24h", "rpo: 99999999999999999d"), 2, "longer than 10 years"),
    "billion-laughs": (LAUGHS, 2, "an alias (*l0) is not accepted"),
    "hostile-agent-config": (DRILL_CONFIG.replace("DIR/agent.yaml", "DIR/laughs.yaml"), 4,
                             "laughs.yaml:2: (top level): refused: an alias"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_DRILL))
def test_a_hostile_drill_config_is_named_with_its_line(hostile: pathlib.Path, name: str) -> None:
    (hostile / "laughs.yaml").write_text(LAUGHS)
    content, line, words = HOSTILE_DRILL[name]
    path = hostile / f"{name}.yaml"
    path.write_text(content.replace("DIR", str(hostile)))
    _assert_clear(run_cli("drillctl", "drill", "list", "-c", str(path), timeout=60), f"{path}:{line}: ", words)
