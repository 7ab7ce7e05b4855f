"""Property: any text, and any data dumped as YAML, is either a valid config or a ConfigError -- nothing else, quickly.

Fed to the agent's ``validate_config`` and to the coordinator's ``load_drill_config``
(through a real file). A traceback of any other exception, or an example slower
than the deadline, fails the test with the input that caused it.
"""

from __future__ import annotations

import copy
import pathlib
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.config.model import validate_config
from agents.contract.configfile import ConfigError
from drill.config import load_drill_config

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Characters YAML gives a meaning, and words it reads as other types, to reach the parser's corners.
YAML_ALPHABET = ":-[]{}&*!|>'\"#%@`,?~.\\ \t\n\r0123456789abcdeflnosuxyz_/\u00b2\u0661\uff11\ufeff\x00\x85"
YAML_WORDS = ["on", "yes", "no", "off", "null", "~", ".nan", ".inf", "-.inf", "0x1f", "1e3", "1.5e+400", "2024-13-01",
              "&a", "*a", "<<", "!!binary", "!!python/object", "!!set", "---", "...", "\\0", "? ", "- ", ": ", "14d",
              "monthly ² 03:00", "99999999999999d", "state_dir", "repositories", "targets", "policies", "systems"]

yaml_ish_text = st.lists(st.one_of(st.text(YAML_ALPHABET, max_size=12), st.sampled_from(YAML_WORDS)),
                         max_size=40).map("".join)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=30), st.sampled_from(YAML_WORDS))
nested = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=5)),
                      max_leaves=40)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="module")
def folder() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory() as name:
        root = pathlib.Path(name)
        (root / "pw").write_text("x\n")
        (root / "a-directory").mkdir()
        yield root


def _good_agent(root: pathlib.Path) -> dict[str, Any]:
    return {"host": "app01", "state_dir": str(root / "state"),
            "repositories": {"local": {"url": str(root / "repo"), "password_file": str(root / "pw"),
                                       "connect_timeout": 60},
                             "far": {"url": str(root / "far"), "password_file": str(root / "pw")}},
            "targets": {"documents": {"kind": "files", "paths": ["/srv/documents"], "exclude": ["*.tmp"]},
                        "appdb": {"kind": "postgres", "databases": ["app"], "port": 5432}},
            "policies": {"nightly": {"targets": ["documents", "appdb"], "repository": "local",
                                     "replicate_to": ["far"], "schedule": {"full": "sun 01:00"},
                                     "max_full_interval": "14d", "retention": {"full": 8}}}}


def _good_drill(root: pathlib.Path) -> dict[str, Any]:
    return {"state_dir": str(root / "coordinator"), "objectives": {"rto": "1h", "rpo": "24h"},
            "systems": {"app01": {"agent_config": str(root / "agent.yaml"), "targets": ["documents"]}}}


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``data`` (mapping keys and list indexes), the empty one included."""
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    result = copy.deepcopy(data)
    parent = result
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return result


def _mutated(good: dict[str, Any], choose: st.DataObject) -> str:
    """``good`` with one value (anywhere, the whole document included) replaced by arbitrary data."""
    path = choose.draw(st.sampled_from(_paths(good)))
    return _dump(_replace(good, path, choose.draw(nested)))


def _agent_outcome(text: str) -> None:
    try:
        validate_config("fuzz.yaml", text)
    except ConfigError as error:
        assert error.problems and all(p.file == "fuzz.yaml" for p in error.problems)


def _drill_outcome(folder: pathlib.Path, text: str) -> None:
    path = folder / "drill.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_drill_config(str(path))
    except ConfigError as error:
        assert error.problems


@FUZZ
@given(text=st.one_of(st.text(max_size=300), yaml_ish_text))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    _agent_outcome(text)


@FUZZ
@given(data=nested)
def test_any_data_is_a_config_or_a_config_error(data: Any) -> None:
    _agent_outcome(_dump(data))


@FUZZ
@given(choose=st.data())
def test_a_good_agent_config_with_anything_anywhere(folder: pathlib.Path, choose: st.DataObject) -> None:
    _agent_outcome(_mutated(_good_agent(folder), choose))


@FUZZ
@given(text=st.one_of(st.text(max_size=300), yaml_ish_text))
def test_any_text_is_a_drill_config_or_a_config_error(folder: pathlib.Path, text: str) -> None:
    _drill_outcome(folder, text)


@FUZZ
@given(choose=st.data())
def test_a_good_drill_config_with_anything_anywhere(folder: pathlib.Path, choose: st.DataObject) -> None:
    (folder / "agent.yaml").write_text(_dump(_good_agent(folder)))
    _drill_outcome(folder, _mutated(_good_drill(folder), choose))


def test_the_unmutated_configs_are_valid(folder: pathlib.Path) -> None:
    # The mutations above start from configs that pass, so each one probes one change.
    (folder / "agent.yaml").write_text(_dump(_good_agent(folder)))
    assert validate_config("fuzz.yaml", _dump(_good_agent(folder))).host == "app01"
    assert set(load_drill_config(str(_write(folder, _dump(_good_drill(folder))))).systems) == {"app01"}


def _write(folder: pathlib.Path, text: str) -> pathlib.Path:
    path = folder / "drill.yaml"
    path.write_text(text)
    return path
