"""Config validation: every problem at once, with file, line and field path."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import yaml

from agents.config import checked
from agents.config.envfile import EnvFileError, parse_env_file
from agents.config.example import render_example
from agents.config.model import ConfigError, validate_config
from agents.contract.configfile import check_schema
from policies.levels import Level

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def secrets_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "restic.pw").write_text("pw\n")
    (tmp_path / "s3.env").write_text("# keys\nAWS_ACCESS_KEY_ID=abc\nexport AWS_SECRET_ACCESS_KEY='s e'\n")
    return tmp_path


def _config(secrets_dir: pathlib.Path, body: str) -> str:
    return textwrap.dedent(body).replace("DIR", str(secrets_dir))


GOOD = """\
host: app01
state_dir: /var/lib/drill-agent
repositories:
  local:
    url: s3:http://127.0.0.1:9000/backups/app01
    password_file: DIR/restic.pw
    env_file: DIR/s3.env
  same-city:
    url: s3:http://127.0.0.1:9001/backups/app01
    password_file: DIR/restic.pw
    env_file: DIR/s3.env
targets:
  documents:
    kind: files
    paths: [/srv/documents, /etc/app]
    exclude: ["*.tmp", "cache/"]
policies:
  nightly:
    targets: [documents]
    repository: local
    replicate_to: [same-city]
    schedule:
      full: "sun 01:00"
      differential: "wed 01:00"
      incremental: "daily 01:00"
    max_full_interval: 14d
    retention: {full: 8, differential: 4, incremental: 14}
"""


def test_the_issue_example_validates_as_written(secrets_dir: pathlib.Path) -> None:
    config = validate_config("agent.yaml", _config(secrets_dir, GOOD))
    assert config.host == "app01"
    assert config.repositories["local"].env == {"AWS_ACCESS_KEY_ID": "abc", "AWS_SECRET_ACCESS_KEY": "s e"}
    policy = config.policies["nightly"]
    assert policy.replicate_to == ("same-city",)
    assert policy.retention == {Level.FULL: 8, Level.DIFFERENTIAL: 4, Level.INCREMENTAL: 14}
    assert policy.max_full_interval is not None and policy.max_full_interval.days == 14
    assert config.targets["documents"].exclude == ("*.tmp", "cache/")


def test_all_problems_are_reported_at_once_with_lines_and_paths(secrets_dir: pathlib.Path) -> None:
    bad = GOOD.replace("paths: [/srv/documents, /etc/app]", "paths: [relative/path]").replace(
        "    repository: local\n", "    repository: local\n    colour: blue\n"
    ).replace("retention: {full: 8,", "retention: {full: 0,")
    with pytest.raises(ConfigError) as caught:
        validate_config("agent.yaml", _config(secrets_dir, bad))
    text = str(caught.value)
    problems = {p.path: p for p in caught.value.problems}
    assert problems["targets.documents.paths[0]"].line == 15
    assert "absolute path" in problems["targets.documents.paths[0]"].message
    assert problems["policies.nightly.colour"].line == 21
    assert "unknown key 'colour'" in problems["policies.nightly.colour"].message
    assert "policies.nightly.retention.full" in problems
    assert text.startswith("agent.yaml:15: targets.documents.paths[0]:")


def test_cross_field_checks(secrets_dir: pathlib.Path) -> None:
    bad = (GOOD.replace("targets: [documents]", "targets: [documents, nope]")
           .replace("replicate_to: [same-city]", "replicate_to: [far-away]")
           .replace('full: "sun 01:00"', 'full: "sunday at one"')
           .replace("max_full_interval: 14d", "max_full_interval: 2 weeks"))
    with pytest.raises(ConfigError) as caught:
        validate_config("a.yaml", _config(secrets_dir, bad))
    by_path = {p.path: p.message for p in caught.value.problems}
    assert "unknown target 'nope'" in by_path["policies.nightly.targets[1]"]
    assert "unknown repository 'far-away'" in by_path["policies.nightly.replicate_to[0]"]
    assert "not a calendar expression" in by_path["policies.nightly.schedule.full"]
    assert "not a duration" in by_path["policies.nightly.max_full_interval"]


def test_missing_secret_files_and_password_choice(secrets_dir: pathlib.Path) -> None:
    bad = GOOD.replace("DIR/restic.pw\n    env_file: DIR/s3.env\n  same-city",
                       "DIR/missing.pw\n    password_command: echo x\n  same-city")
    with pytest.raises(ConfigError) as caught:
        validate_config("a.yaml", _config(secrets_dir, bad))
    messages = [p.message for p in caught.value.problems]
    assert any("exactly one of password_file or password_command" in m for m in messages)
    assert any("missing.pw does not exist" in m for m in messages)


def test_two_s3_providers_with_different_credentials_are_accepted(secrets_dir: pathlib.Path) -> None:
    (secrets_dir / "other.env").write_text("AWS_ACCESS_KEY_ID=other\nAWS_SECRET_ACCESS_KEY=x\n")
    two_providers = GOOD.replace("9001/backups/app01\n    password_file: DIR/restic.pw\n    env_file: DIR/s3.env",
                                 "9001/backups/app01\n    password_file: DIR/restic.pw\n    env_file: DIR/other.env")
    config = validate_config("a.yaml", _config(secrets_dir, two_providers))
    assert config.repositories["same-city"].env["AWS_ACCESS_KEY_ID"] == "other"
    assert config.rclone_binary == "rclone"


def test_different_credentials_off_s3_cannot_be_replicated(secrets_dir: pathlib.Path) -> None:
    (secrets_dir / "other.env").write_text("AWS_ACCESS_KEY_ID=other\nAWS_SECRET_ACCESS_KEY=x\n")
    bad = GOOD.replace("url: s3:http://127.0.0.1:9001/backups/app01\n    password_file: DIR/restic.pw\n"
                       "    env_file: DIR/s3.env",
                       "url: rest:http://127.0.0.1:9001/app01\n    password_file: DIR/restic.pw\n"
                       "    env_file: DIR/other.env")
    with pytest.raises(ConfigError, match="two sets of credentials only for two S3") as caught:
        validate_config("a.yaml", _config(secrets_dir, bad))
    assert caught.value.problems[0].path == "policies.nightly.replicate_to[0]"
    assert "other" not in str(caught.value).replace("other.env", "")  # no secret value quoted


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config("a.yaml", "host: a\nrepositories: [unclosed\n")
    assert caught.value.problems[0].line is not None
    assert "not valid YAML" in caught.value.problems[0].message


def test_duplicate_keys_are_refused(secrets_dir: pathlib.Path) -> None:
    doubled = GOOD.replace("host: app01\n", "host: app01\nhost: app02\n")
    with pytest.raises(ConfigError, match="appears twice") as caught:
        validate_config("a.yaml", _config(secrets_dir, doubled))
    assert caught.value.problems[0].line == 2


def test_target_kind_is_checked() -> None:
    with pytest.raises(ConfigError, match="kind"):
        validate_config("a.yaml", "state_dir: /s\nrepositories: {r: {url: /x, password_command: x}}\n"
                        "targets: {t: {kind: tape}}\npolicies: {p: {targets: [t], repository: r}}\n")


def test_the_example_describes_every_key_and_validates(secrets_dir: pathlib.Path) -> None:
    text = render_example()
    assert text.count("# ") > 20
    document = yaml.safe_load(text)
    assert document["policies"]["nightly"]["schedule"]["full"] == "sun 01:00"
    for repo in document["repositories"].values():
        repo["password_file"] = str(secrets_dir / "restic.pw")
        repo["env_file"] = str(secrets_dir / "s3.env")
    config = validate_config("example.yaml", yaml.safe_dump(document))
    assert set(config.repositories) == {"local", "same-city"}


def test_env_file_errors_name_the_line_not_the_value() -> None:
    with pytest.raises(EnvFileError) as caught:
        parse_env_file("A=1\nthis-is-secret-garbage\n")
    assert caught.value.line == 2
    assert "secret" not in str(caught.value)


def _with_state_dir(secrets_dir: pathlib.Path) -> tuple[str, pathlib.Path]:
    state = secrets_dir / "state"
    state.mkdir(mode=0o700)
    return _config(secrets_dir, GOOD).replace("/var/lib/drill-agent", str(state)), state


def _count_schema_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def counting(*args: Any) -> bool:
        calls.append(1)
        return check_schema(*args)

    monkeypatch.setattr("agents.config.model.check_schema", counting)
    return calls


def test_a_config_that_passed_its_schema_is_not_checked_again_until_it_changes(
    secrets_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, state = _with_state_dir(secrets_dir)
    checks = _count_schema_checks(monkeypatch)
    first = validate_config("agent.yaml", text, remembered=True)
    assert len(checks) == 1 and len(os.listdir(state / "checked")) == 1
    again = validate_config("agent.yaml", text, remembered=True)
    assert len(checks) == 1 and again.raw == first.raw and again.policies == first.policies
    validate_config("agent.yaml", text)  # checking a config on request checks it all
    assert len(checks) == 2
    validate_config("agent.yaml", text.replace("host: app01", "host: app02"), remembered=True)
    assert len(checks) == 3 and len(os.listdir(state / "checked")) == 2
    # Only the schema check is remembered: the checks across fields and files run each time.
    (secrets_dir / "restic.pw").unlink()
    with pytest.raises(ConfigError, match="password_file"):
        validate_config("agent.yaml", text, remembered=True)
    assert len(checks) == 3


def test_a_schema_memo_is_trusted_only_in_a_private_state_directory(
    secrets_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, state = _with_state_dir(secrets_dir)
    checks = _count_schema_checks(monkeypatch)
    validate_config("agent.yaml", text, remembered=True)
    [memo] = (state / "checked").iterdir()
    for writable_by_others in (state, state / "checked"):  # someone else could have planted it
        writable_by_others.chmod(0o770)
        validate_config("agent.yaml", text, remembered=True)
        writable_by_others.chmod(0o700)
    assert len(checks) == 3
    elsewhere = secrets_dir / "elsewhere"
    elsewhere.write_text("")
    memo.unlink()
    memo.symlink_to(elsewhere)
    validate_config("agent.yaml", text, remembered=True)
    assert len(checks) == 4


def test_the_schema_memo_is_keyed_by_the_parsed_config_and_the_schema() -> None:
    data = {"host": "app01", "state_dir": "/var/lib/drill-agent"}
    schema = {"type": "object", "properties": {"host": {"type": "string"}}}
    assert checked.schema_digest(data, schema) == checked.schema_digest(dict(reversed(data.items())), schema)
    assert checked.schema_digest(data, schema) != checked.schema_digest(data, {**schema, "required": ["host"]})
    assert checked.schema_digest(data, schema) != checked.schema_digest({**data, "host": "app02"}, schema)


def test_a_config_that_fails_any_check_leaves_no_schema_memo(secrets_dir: pathlib.Path) -> None:
    text, state = _with_state_dir(secrets_dir)
    with pytest.raises(ConfigError, match="far-away"):  # passes the schema, fails across fields
        validate_config("agent.yaml", text.replace("replicate_to: [same-city]", "replicate_to: [far-away]"),
                        remembered=True)
    assert not (state / "checked").exists() or not os.listdir(state / "checked")


def test_only_the_newest_schema_memos_are_kept(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    (state / "checked").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    for age in range(20):
        old = state / "checked" / f"old-{age:02}"
        old.write_text("")
        os.utime(old, ns=(10**18 - age * 10**9, 10**18 - age * 10**9))  # old-00 the newest
    checked.remember(str(state), "new")
    assert sorted(os.listdir(state / "checked")) == ["new", *(f"old-{age:02}" for age in range(checked.KEPT - 1))]


def test_an_unchanged_config_is_loaded_without_importing_the_schema_library(secrets_dir: pathlib.Path) -> None:
    text, _ = _with_state_dir(secrets_dir)
    path = secrets_dir / "agent.yaml"
    path.write_text(text)
    program = ("import sys, agents.cli; from agents.config.model import load_config; "
               "load_config(sys.argv[1], remembered=True); print('jsonschema' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", program, str(path)], capture_output=True, text=True, check=True,
                           cwd=REPOSITORY).stdout.strip() for _ in range(2)]
    assert runs == ["True", "False"]
