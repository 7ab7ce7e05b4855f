"""Config validation: every problem at once, with file, line and field path."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import yaml

from agents.config.envfile import EnvFileError, parse_env_file
from agents.config.example import render_example
from agents.config.model import ConfigError, validate_config
from policies.levels import Level


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
