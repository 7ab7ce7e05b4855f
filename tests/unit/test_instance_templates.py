"""Throwaway instances' data directories copied from a template the installer made once
(:mod:`agents.scratch.templates`); a real ``initdb`` and ``mariadb-install-db`` are copied in
tests/integration/test_engine_specifics.py. Here the installer is a function that writes a small tree."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from agents.scratch.account import InstanceAccount
from agents.scratch.templates import InstanceTemplate, make_data_dir

ME = InstanceAccount("me", os.geteuid(), os.getegid(), switch=False)


class _Installer:
    """Writes what an installer would (a private directory, a read-only file, a subfolder) and counts its runs."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        (self.data_dir / "base" / "1").mkdir(parents=True)
        (self.data_dir / "PG_VERSION").write_text("15\n")
        (self.data_dir / "base" / "1" / "1259").write_bytes(os.urandom(50_000))
        os.chmod(self.data_dir / "PG_VERSION", 0o400)
        os.chmod(self.data_dir, 0o700)


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    found: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode),
                                             path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return found


@pytest.fixture
def place(tmp_path: Path) -> dict[str, Path]:
    binary = tmp_path / "initdb"
    binary.write_text("#!/bin/sh\n")
    return {"templates": tmp_path / "templates", "binary": binary, "scratch": tmp_path / "scratch"}


def _make(place: dict[str, Path], name: str, installer: _Installer | None = None) -> tuple[bool, _Installer, Path]:
    data_dir = place["scratch"] / name / "data"
    data_dir.parent.mkdir(parents=True)
    installer = installer or _Installer(data_dir)
    installer.data_dir = data_dir
    copied = make_data_dir(str(place["templates"]), "postgres", ["initdb", "--pgdata", str(data_dir)],
                           str(data_dir), [str(place["binary"])], ME, installer)
    return copied, installer, data_dir


def test_the_installer_runs_once_and_later_instances_are_copies_with_the_same_files_and_modes(place):
    copied, installer, first = _make(place, "a")
    assert (copied, installer.runs) == (False, 1)
    template = next(place["templates"].iterdir())
    assert stat.S_IMODE(template.lstat().st_mode) == 0o700 and template.lstat().st_uid == os.geteuid()

    copied, installer, second = _make(place, "b", installer)
    assert (copied, installer.runs) == (True, 1)
    assert _tree(second) == _tree(first)
    assert stat.S_IMODE(second.lstat().st_mode) == 0o700


def test_a_new_binary_or_other_installer_arguments_make_a_new_template_and_the_old_one_goes(place):
    _, installer, _ = _make(place, "a")
    old = {p.name for p in place["templates"].iterdir()}
    os.utime(place["binary"], ns=(1, 1))  # the package was upgraded
    copied, installer, _ = _make(place, "b", installer)
    assert (copied, installer.runs) == (False, 2)
    new = {p.name for p in place["templates"].iterdir()}
    assert len(new) == 1 and new != old

    folder = str(place["templates"])
    one = InstanceTemplate(folder, "postgres", ["initdb", "--pgdata", "/x/data"], "/x/data", [str(place["binary"])])
    other = InstanceTemplate(folder, "postgres", ["initdb", "--pgdata", "/y/data"], "/y/data", [str(place["binary"])])
    changed = InstanceTemplate(folder, "postgres", ["initdb", "-E", "SQL_ASCII", "--pgdata", "/x/data"], "/x/data",
                               [str(place["binary"])])
    assert one.path == other.path != changed.path  # the data directory's own path is not part of the key


@pytest.mark.parametrize("plant", ["symlink", "fifo", "group-writable", "other-owner"])
def test_a_template_holding_anything_but_the_agents_own_plain_files_is_removed_and_the_installer_runs(place, plant):
    if plant == "other-owner" and os.geteuid() != 0:
        pytest.skip("only root can give a file away")  # CI runs the suite as root
    _, installer, _ = _make(place, "a")
    template = next(place["templates"].iterdir())
    planted = template / "base" / "1" / "planted"
    if plant == "symlink":
        planted.symlink_to("/etc/shadow")
    elif plant == "fifo":
        os.mkfifo(planted)
    elif plant == "group-writable":
        os.chmod(template / "base" / "1" / "1259", 0o620)
    else:
        planted.write_text("x")
        os.chown(planted, 65534, 65534)

    copied, installer, data_dir = _make(place, "b", installer)
    assert (copied, installer.runs) == (False, 2)
    assert not (data_dir / "base" / "1" / "planted").exists() and not (data_dir / "base" / "1" / "planted").is_symlink()
    assert sorted(p.name for p in place["templates"].iterdir()) == [template.name]  # made again, from this run
    assert _tree(template).keys() == _tree(data_dir).keys()


def test_without_a_template_folder_the_installer_always_runs_and_nothing_is_kept(place):
    data_dir = place["scratch"] / "data"
    place["scratch"].mkdir()
    installer = _Installer(data_dir)
    for _ in range(2):
        assert not make_data_dir(None, "mysql", ["install"], str(data_dir), [str(place["binary"])], ME, installer)
        shutil.rmtree(data_dir)
    assert installer.runs == 2 and not place["templates"].exists()


def test_a_failing_installer_fails_the_start_and_keeps_nothing(place):
    def broken() -> None:
        raise RuntimeError("initdb failed")

    data_dir = place["scratch"] / "data"
    with pytest.raises(RuntimeError, match="initdb failed"):
        make_data_dir(str(place["templates"]), "postgres", ["initdb"], str(data_dir), [str(place["binary"])], ME,
                      broken)
    assert not place["templates"].exists() or not any(place["templates"].iterdir())


def test_a_missing_binary_means_no_template_not_a_failure(place, tmp_path):
    data_dir = place["scratch"] / "data"
    place["scratch"].mkdir()
    installer = _Installer(data_dir)
    assert not make_data_dir(str(place["templates"]), "mysql", ["install"], str(data_dir),
                             [str(tmp_path / "no-such-binary")], ME, installer)
    assert installer.runs == 1 and not place["templates"].exists()
