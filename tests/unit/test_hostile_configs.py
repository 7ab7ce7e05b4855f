"""Hostile config input: every case ends in a ConfigError naming the line, never a crash, a hang or acceptance."""

from __future__ import annotations

import os
import pathlib
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

from agents.config.model import load_config, validate_config
from agents.contract.configfile import MAX_SCHEMA_PROBLEMS, ConfigError, ConfigProblem
from agents.contract.yamlfile import MAX_DEPTH, MAX_NODES, YamlLimitError, YamlSyntaxError, load_yaml
from drill.config import load_drill_config


@pytest.fixture
def secrets(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "restic.pw").write_text("pw\n")
    (tmp_path / "s3.env").write_text("AWS_ACCESS_KEY_ID=abc\n")
    (tmp_path / "a-directory").mkdir()
    return tmp_path


# Line 4 is the repository, line 6 the target, line 8 the policy: the tests below add keys to those lines.
AGENT = """\
host: app01
state_dir: DIR/state
repositories:
  local: {url: DIR/repo, password_file: DIR/restic.pw, env_file: DIR/s3.env}
targets:
  documents: {kind: files, paths: [/srv/documents]}
policies:
  nightly: {targets: [documents], repository: local}
"""


def _agent(secrets: pathlib.Path, old: str = "", new: str = "") -> str:
    text = AGENT.replace(old, new) if old else AGENT
    return text.replace("DIR", str(secrets))


def _problems(source: str, text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        validate_config(source, text)
    return caught.value.problems


def _only(source: str, text: str) -> ConfigProblem:
    problems = _problems(source, text)
    assert len(problems) == 1, problems
    return problems[0]


def _finishes(seconds: float, action: Callable[[], object], fifo: pathlib.Path | None = None) -> object:
    """Run ``action`` in a thread; fail (and unblock a reader of ``fifo``) if it takes longer than ``seconds``."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # handed back to the test, which names it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive() and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY))  # a reader blocked on the FIFO gets end of file
    assert not thread.is_alive() and outcome, f"still running after {seconds}s"
    return outcome[0]


# --- the YAML loader -----------------------------------------------------------------------------------------

BILLION_LAUGHS = "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


def test_billion_laughs_is_refused_at_its_first_alias_without_expanding_it() -> None:
    started = time.monotonic()
    problem = _only("a.yaml", BILLION_LAUGHS)
    assert time.monotonic() - started < 2
    assert problem.line == 2
    assert "an alias (*l0) is not accepted" in problem.message
    assert str(problem).startswith("a.yaml:2: ")


def test_a_recursive_alias_is_refused() -> None:
    problem = _only("a.yaml", "host: a\nloop: &x [*x]\n")
    assert (problem.line, problem.message) == (2, "refused: an alias (*x) is not accepted in a config file; "
                                                   "write the value out where it is needed")


def test_an_alias_in_a_merge_key_is_refused_but_an_inline_merge_works() -> None:
    with pytest.raises(YamlLimitError, match=r"alias \(\*base\)") as caught:
        load_yaml("base: &base {a: 1}\nother:\n  <<: *base\n  b: 2\n")
    assert caught.value.line == 3
    assert load_yaml("other:\n  <<: {a: 1}\n  b: 2\n").data == {"other": {"a": 1, "b": 2}}


@pytest.mark.parametrize("text", ["a: " + "[" * 5000 + "]" * 5000 + "\n",
                                  "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n",
                                  "".join("  " * depth + f"k{depth}:\n" for depth in range(500)) + "  " * 500 + "x\n"],
                         ids=["flow-lists", "flow-mappings", "block-mappings"])
def test_deep_nesting_is_refused_with_its_line(text: str) -> None:
    problem = _only("a.yaml", text)
    assert problem.message == f"refused: nested more than {MAX_DEPTH} levels deep"
    assert problem.line == (1 if text.startswith("a:") else MAX_DEPTH + 1)


def test_nesting_up_to_the_limit_is_read() -> None:
    assert load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH).data is not None
    with pytest.raises(YamlLimitError):
        load_yaml("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_too_many_values_are_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(YamlLimitError, match=f"more than {MAX_NODES} values") as caught:
        load_yaml("a:\n" + "- 1\n" * (MAX_NODES + 10))
    assert caught.value.line is not None and caught.value.line > MAX_NODES // 2
    assert time.monotonic() - started < 10


def test_keys_are_the_text_written_so_yes_and_on_stay_names(secrets: pathlib.Path) -> None:
    assert load_yaml("on: 1\nyes: 2\n1: 3\nnull: 4\n~: 5\n").data == {"on": 1, "yes": 2, "1": 3, "null": 4, "~": 5}
    text = _agent(secrets, "documents: {kind", "yes: {kind").replace("targets: [documents]", 'targets: ["yes"]')
    text = text.replace("local:", "on:").replace("repository: local", "repository: 'on'").replace("nightly:", "no:")
    config = validate_config("a.yaml", text)
    assert set(config.targets) == {"yes"} and set(config.repositories) == {"on"} and set(config.policies) == {"no"}
    assert config.policies["no"].targets == ("yes",) and config.policies["no"].repository == "on"


def test_an_unquoted_yes_as_a_value_is_named_with_a_hint(secrets: pathlib.Path) -> None:
    text = _agent(secrets, "documents: {kind", "yes: {kind").replace("targets: [documents]", "targets: [yes]")
    problem = _only("a.yaml", text)
    assert (problem.line, problem.path) == (8, "policies.nightly.targets[0]")
    assert "True is not of type 'string'" in problem.message and "quote the word" in problem.message


def test_a_key_that_is_a_list_is_refused() -> None:
    problem = _only("a.yaml", "host: a\n? [a, b]\n: c\n")
    assert (problem.line, problem.message) == (2, "refused: a key must be a plain name, not a list or a mapping")


@pytest.mark.parametrize(("escape", "code"), [("\\0", "U+0000"), ("\\x07", "U+0007"), ("\\ud800", "U+D800")])
def test_control_characters_and_lone_surrogates_from_escapes_are_refused(secrets: pathlib.Path, escape: str,
                                                                         code: str) -> None:
    problem = _only("a.yaml", _agent(secrets, "password_file: DIR/restic.pw", f'password_file: "/etc/a{escape}b"'))
    assert problem.line == 4 and code in problem.message


def test_a_raw_control_character_names_its_line() -> None:
    problem = _only("a.yaml", "host: a\nstate_dir: /x\x07\n")
    assert problem.line == 2 and "not allowed in YAML text" in problem.message


@pytest.mark.parametrize(("value", "words"), [("2024-13-01", "month must be in 1..12"), ("9" * 5000, "4300 digits"),
                                              ("2001-12-14t21:59:43.10+99:00", "offset must be a timedelta")])
def test_values_yaml_cannot_build_are_refused_with_their_line(value: str, words: str) -> None:
    problem = _only("a.yaml", f"host: a\nstate_dir: /x\nextra: {value}\n")
    assert problem.line == 3 and "cannot read the value" in problem.message and words in problem.message
    assert len(problem.message) < 400


def test_a_document_too_large_is_refused_before_parsing() -> None:
    with pytest.raises(YamlSyntaxError, match="more than 4 Mi characters"):
        load_yaml("#" * (4 * 1024 * 1024 + 1))


# --- numbers ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "words"), [
    ("connect_timeout", ".nan", "not a finite number"),
    ("connect_timeout", ".inf", "not a finite number"),
    ("stall_timeout", "-.inf", "not a finite number"),
    ("stall_timeout", ".NaN", "not a finite number"),
    ("connect_timeout", "1.0e+400", "not a finite number"),
    ("connect_timeout", "99999999999999999999999", "is greater than the maximum of 3600"),
    ("stall_timeout", "86401", "is greater than the maximum of 86400"),
    ("connect_timeout", "0.001", "is less than the minimum of 1"),
    ("connect_timeout", "-5", "is less than the minimum of 1"),
    ("lock_wait", "-1", "is less than the minimum of 0"),
    ("lock_wait", ".inf", "not a finite number"),
])
def test_timeouts_must_be_finite_and_bounded(secrets: pathlib.Path, key: str, value: str, words: str) -> None:
    problem = _only("a.yaml", _agent(secrets, "env_file: DIR/s3.env}", f"env_file: DIR/s3.env, {key}: {value}}}"))
    assert (problem.line, problem.path) == (4, f"repositories.local.{key}")
    assert words in problem.message


def test_retention_counts_are_bounded(secrets: pathlib.Path) -> None:
    problem = _only("a.yaml", _agent(secrets, "repository: local}", "repository: local, retention: {full: 10000001}}"))
    assert (problem.line, problem.path) == (8, "policies.nightly.retention.full")
    assert "greater than the maximum of 10000" in problem.message


# --- durations and calendars --------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "words"), [
    ("99999999999999d", "longer than 10 years"),
    ("1" + "0" * 5000 + "s", "longer than 64 characters"),
    ("3654d", "longer than 10 years"),
    ("0d", "no time at all"),
    ("１４d", "is not a duration"),
    ("-14d", "is not a duration"),
])
def test_max_full_interval_is_a_bounded_ascii_duration(secrets: pathlib.Path, value: str, words: str) -> None:
    problem = _only("a.yaml", _agent(secrets, "repository: local}", f"repository: local, max_full_interval: {value}}}"))
    assert (problem.line, problem.path) == (8, "policies.nightly.max_full_interval")
    assert words in problem.message and len(problem.message) < 200


@pytest.mark.parametrize("calendar", ["monthly ² 03:00", "monthly ١ 03:00", "daily ０１:００", "hourly :１５",
                                      "daily " + "1" * 300])
def test_calendars_take_only_ascii_digits(secrets: pathlib.Path, calendar: str) -> None:
    text = _agent(secrets, "repository: local}", f"repository: local, schedule: {{full: '{calendar}'}}}}")
    problem = _only("a.yaml", text)
    assert (problem.line, problem.path) == (8, "policies.nightly.schedule.full")
    assert "daily 01:00" in problem.message or "longer than 200 characters" in problem.message


# --- strings and lists ----------------------------------------------------------------------------------------

def test_long_strings_are_refused_with_a_short_message(secrets: pathlib.Path) -> None:
    problem = _only("a.yaml", _agent(secrets, "state_dir: DIR/state", "state_dir: /" + "a" * 100_000))
    assert (problem.line, problem.path) == (2, "state_dir")
    assert "longer than 4096 characters" in problem.message and len(problem.message) < 200


def test_a_name_with_a_trailing_newline_is_refused(secrets: pathlib.Path) -> None:
    problem = _only("a.yaml", _agent(secrets, "host: app01", 'host: "app01\\n"'))
    assert (problem.line, problem.path) == (1, "host")


def test_a_long_list_of_mappings_is_checked_quickly_and_reported_briefly(secrets: pathlib.Path) -> None:
    # jsonschema's own uniqueItems compares every pair of unsortable items: 20,000 mappings took minutes.
    started = time.monotonic()
    problems = _problems("a.yaml", _agent(secrets, "targets: [documents]", "targets: [" + "{}, " * 20_000 + "]"))
    assert time.monotonic() - started < 10
    assert len(problems) == MAX_SCHEMA_PROBLEMS + 1
    messages = [p.message for p in problems]
    assert "a list of 20000 items; at most 1000 are accepted here" in messages
    assert "{} appears more than once" in messages
    assert any(m.startswith("more problems follow") for m in messages)
    assert all(p.line == 8 for p in problems)


def test_thousands_of_duplicate_keys_are_reported_briefly() -> None:
    problems = [p for p in _problems("a.yaml", "host: a\n" * 5000) if "required" not in p.message]
    assert len(problems) == MAX_SCHEMA_PROBLEMS + 1
    assert [p.line for p in problems[:3]] == [2, 3, 4]
    assert problems[-1].message == f"{4999 - MAX_SCHEMA_PROBLEMS} more keys appear twice"
    assert problems[-1].line == MAX_SCHEMA_PROBLEMS + 2


# --- files the config names, and the config file itself -----------------------------------------------------

def test_an_env_file_that_is_a_directory(secrets: pathlib.Path) -> None:
    problem = _only("a.yaml", _agent(secrets, "env_file: DIR/s3.env", "env_file: DIR/a-directory"))
    assert (problem.line, problem.path) == (4, "repositories.local.env_file")
    assert problem.message == f"env file {secrets}/a-directory is a directory, not a regular file"


def test_a_password_file_that_is_a_directory(secrets: pathlib.Path) -> None:
    problem = _only("a.yaml", _agent(secrets, "password_file: DIR/restic.pw", "password_file: DIR/a-directory"))
    assert (problem.line, problem.path) == (4, "repositories.local.password_file")
    assert problem.message == f"password file {secrets}/a-directory is a directory, not a regular file"


@pytest.mark.parametrize("key", ["env_file", "password_file"])
def test_a_fifo_named_by_the_config_is_refused_without_blocking(secrets: pathlib.Path, key: str) -> None:
    os.mkfifo(secrets / "pipe")
    old = "env_file: DIR/s3.env" if key == "env_file" else "password_file: DIR/restic.pw"
    text = _agent(secrets, old, f"{key}: DIR/pipe")
    outcome = _finishes(10, lambda: validate_config("a.yaml", text), secrets / "pipe")
    assert isinstance(outcome, ConfigError), outcome
    [problem] = outcome.problems
    assert problem.line == 4 and "is a FIFO (named pipe), not a regular file" in problem.message


def test_secret_files_are_bounded(secrets: pathlib.Path) -> None:
    (secrets / "big.env").write_text("A=" + "x" * 70_000 + "\n")
    problem = _only("a.yaml", _agent(secrets, "env_file: DIR/s3.env", "env_file: DIR/big.env"))
    assert problem.line == 4 and "is larger than 64 KiB (70003 bytes)" in problem.message


def test_an_env_file_in_utf16_is_named(secrets: pathlib.Path) -> None:
    (secrets / "wide.env").write_bytes("AWS_ACCESS_KEY_ID=abc\n".encode("utf-16"))
    problem = _only("a.yaml", _agent(secrets, "env_file: DIR/s3.env", "env_file: DIR/wide.env"))
    assert problem.line == 4 and "is UTF-16 text" in problem.message and "abc" not in problem.message


def test_a_target_password_file_may_be_absent_but_not_a_directory(secrets: pathlib.Path) -> None:
    target = "appdb: {kind: postgres, databases: [app], password_file: PW}"
    absent = _agent(secrets, "documents: {kind: files, paths: [/srv/documents]}", target.replace("PW", "/nowhere.pw"))
    absent = absent.replace("targets: [documents]", "targets: [appdb]")
    assert validate_config("a.yaml", absent).targets["appdb"].kind == "postgres"
    problem = _only("a.yaml", absent.replace("/nowhere.pw", f"{secrets}/a-directory"))
    assert (problem.line, problem.path) == (6, "targets.appdb.password_file")
    assert "is a directory, not a regular file" in problem.message


def test_a_state_dir_that_is_a_file(secrets: pathlib.Path) -> None:
    problem = _only("a.yaml", _agent(secrets, "state_dir: DIR/state", "state_dir: DIR/restic.pw"))
    assert (problem.line, problem.path, problem.message) == (2, "state_dir",
                                                             f"{secrets}/restic.pw exists and is not a directory")


def _load_error(path: pathlib.Path) -> ConfigProblem:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    [problem] = caught.value.problems
    assert problem.file == str(path)
    return problem


def test_a_fifo_as_the_config_file_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "agent.yaml"
    os.mkfifo(fifo)
    outcome = _finishes(10, lambda: load_config(str(fifo)), fifo)
    assert isinstance(outcome, ConfigError), outcome
    assert outcome.problems[0].message == "cannot read the file: it is a FIFO (named pipe), not a regular file"


def test_a_device_as_the_config_file_is_refused() -> None:
    problem = _load_error(pathlib.Path("/dev/zero"))
    assert problem.message == "cannot read the file: it is a character device, not a regular file"


def test_a_directory_as_the_config_file_is_refused(tmp_path: pathlib.Path) -> None:
    assert _load_error(tmp_path).message == "cannot read the file: it is a directory, not a regular file"


def test_a_config_file_over_4_mib_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    assert "is larger than 4 MiB" in _load_error(path).message


@pytest.mark.parametrize(("encoding", "words"), [("utf-16", "is UTF-16 text (it starts with a byte-order mark)"),
                                                 ("utf-16-le", "holds NUL bytes, so it is UTF-16"),
                                                 ("utf-16-be", "holds NUL bytes, so it is UTF-16"),
                                                 ("utf-32", "is UTF-32 text")])
def test_utf16_and_utf32_config_files_are_named(tmp_path: pathlib.Path, encoding: str, words: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes("host: app01\nstate_dir: /x\n".encode(encoding))
    problem = _load_error(path)
    assert problem.line == 1 and words in problem.message


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"host: app01\nstate_dir: /x\nextra: caf\xe9\n")
    problem = _load_error(path)
    assert (problem.line, problem.message) == (3, "cannot read the file: it is not UTF-8 text (byte 36); "
                                                  "save it as UTF-8")


# --- the drill config -----------------------------------------------------------------------------------------

def _drill(secrets: pathlib.Path, body: str, name: str = "drill.yaml") -> pathlib.Path:
    agent = secrets / "agent.yaml"
    agent.write_text(_agent(secrets))
    path = secrets / name
    path.write_text(textwrap.dedent(body).replace("AGENT", str(agent)).replace("DIR", str(secrets)))
    return path


def _drill_problems(path: pathlib.Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_drill_config(str(path))
    return caught.value.problems


DRILL = """\
state_dir: DIR/coordinator
objectives: {rto: 1h, rpo: 24h}
systems:
  app01: {agent_config: AGENT}
"""


def test_drill_state_dir_that_is_a_file(secrets: pathlib.Path) -> None:
    [problem] = _drill_problems(_drill(secrets, DRILL.replace("DIR/coordinator", "DIR/restic.pw")))
    assert (problem.line, problem.path) == (1, "state_dir") and "exists and is not a directory" in problem.message


def test_drill_duplicate_keys_are_reported(secrets: pathlib.Path) -> None:
    [problem] = _drill_problems(_drill(secrets, DRILL + "objectives: {rto: 2h}\n"))
    assert (problem.line, problem.path) == (5, "objectives")
    assert problem.message == "key appears twice; the second one would silently win"


@pytest.mark.parametrize("key", ["rto", "rpo"])
def test_drill_objectives_are_bounded(secrets: pathlib.Path, key: str) -> None:
    value = {"rto": "rto: 1h", "rpo": "rpo: 24h"}[key]
    [problem] = _drill_problems(_drill(secrets, DRILL.replace(value, f"{key}: 99999999999999999d")))
    assert (problem.line, problem.path) == (2, f"objectives.{key}") and "longer than 10 years" in problem.message


def test_drill_system_named_on_stays_a_name(secrets: pathlib.Path) -> None:
    config = load_drill_config(str(_drill(secrets, DRILL.replace("app01:", "on:"))))
    assert list(config.systems) == ["on"]


def test_drill_config_fifo_and_hostile_agent_config(secrets: pathlib.Path) -> None:
    fifo = secrets / "drill.yaml"
    os.mkfifo(fifo)
    outcome = _finishes(10, lambda: load_drill_config(str(fifo)), fifo)
    assert isinstance(outcome, ConfigError) and "FIFO" in outcome.problems[0].message
    (secrets / "laughs.yaml").write_text(BILLION_LAUGHS)
    [problem] = _drill_problems(_drill(secrets, DRILL.replace("AGENT", "DIR/laughs.yaml"), "other.yaml"))
    assert (problem.line, problem.path) == (4, "systems.app01.agent_config")
    assert f"{secrets}/laughs.yaml:2:" in problem.message and "alias" in problem.message
