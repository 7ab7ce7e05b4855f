"""Throwaway instances' data directories unpacked from a template the installer made once
(:mod:`agents.scratch.templates`), with the real ``tar`` in the real bubblewrap sandbox. The installer here is a
function writing a small tree as the instance's account; a real ``initdb`` and ``mariadb-install-db`` are packed and
unpacked in tests/integration/test_engine_specifics.py."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from agents.scratch.account import InstanceAccount
from agents.scratch.sandbox import Sandbox
from agents.scratch.templates import InstanceTemplate, make_data_dir


class _Installer:
    """Writes what an installer would (a private directory, a read-only file, a subfolder) as the instance's
    account, and counts its runs."""

    def __init__(self, account: InstanceAccount) -> None:
        self.account = account
        self.runs = 0
        self.data_dir = Path()

    def __call__(self) -> None:
        self.runs += 1
        (self.data_dir / "base" / "1").mkdir(parents=True)
        (self.data_dir / "PG_VERSION").write_text("15\n")
        (self.data_dir / "base" / "1" / "1259").write_bytes(os.urandom(50_000))
        with open(self.data_dir / "redo.log", "wb") as log:  # preallocated, a few bytes written: as MariaDB's
            os.posix_fallocate(log.fileno(), 0, 8 << 20)
            log.write(b"header")
        os.chmod(self.data_dir / "PG_VERSION", 0o400)
        os.chmod(self.data_dir, 0o700)
        if self.account.switch:
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, self.account.uid, self.account.gid)


class _Place:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.account = InstanceAccount.resolve("drill-sandbox")
        self.templates = root / "templates"
        self.binary = root / "initdb"
        self.binary.write_text("#!/bin/sh\n")
        self.installer = _Installer(self.account)
        self.count = 0

    def make(self, folder: Path | None = None) -> tuple[bool, Path]:
        """One instance's data directory, in a sandbox of its own; whether it was unpacked from the template."""
        self.count += 1
        instance = self.root / f"instance-{self.count}"
        self.account.make_own_directory(str(instance))
        sandbox = Sandbox.prepare(self.account, str(instance), str(self.root / "etc"))
        data_dir = instance / "data"
        self.installer.data_dir = data_dir
        copied = make_data_dir(str(folder or self.templates) if folder != Path("none") else None, "postgres",
                               ["initdb", "--pgdata", str(data_dir)], str(data_dir), [str(self.binary)],
                               ("PG_VERSION", "base/1"), sandbox, self.installer)
        return copied, data_dir

    def template(self) -> Path:
        [archive] = [p for p in self.templates.iterdir() if not p.name.startswith(".")]
        return archive


def _tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    found: dict[str, tuple[int, int, bytes | None]] = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        found[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_uid,
                                             path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return found


@pytest.fixture
def place(tmp_path: Path) -> _Place:
    return _Place(tmp_path)


def test_the_installer_runs_once_and_later_instances_are_unpacked_with_the_same_files_modes_and_owner(place):
    copied, first = place.make()
    assert (copied, place.installer.runs) == (False, 1)
    archive = place.template().lstat()
    assert stat.S_IMODE(archive.st_mode) == 0o600 and archive.st_uid == os.geteuid()
    assert archive.st_size < 1 << 20  # the preallocated zeros are stored as a hole, not 8 MiB of them

    copied, second = place.make()
    assert (copied, place.installer.runs) == (True, 1)
    assert _tree(second) == _tree(first)
    assert second.lstat().st_uid == place.account.uid and stat.S_IMODE(second.lstat().st_mode) == 0o700
    redo = (second / "redo.log").read_bytes()  # the preallocated file comes back with its bytes, zeros and all
    assert redo == b"header" + bytes((8 << 20) - 6) and (second / "redo.log").stat().st_blocks * 512 < 1 << 20


def test_a_new_binary_or_other_installer_arguments_make_a_new_template_and_the_old_one_goes(place):
    place.make()
    old = place.template().name
    os.utime(place.binary, ns=(1, 1))  # the package was upgraded
    copied, _ = place.make()
    assert (copied, place.installer.runs) == (False, 2)
    assert place.template().name != old

    def path(installer: list[str], data_dir: str) -> str:
        return InstanceTemplate(str(place.templates), "postgres", installer, data_dir, [str(place.binary)]).path

    # The data directory's own path is not part of the key; the other arguments are.
    assert path(["initdb", "-D", "/x/data"], "/x/data") == path(["initdb", "-D", "/y/data"], "/y/data")
    assert path(["initdb", "-D", "/x/data"], "/x/data") != path(["initdb", "-E", "SQL_ASCII", "-D", "/x/data"],
                                                                "/x/data")


@pytest.mark.parametrize("fault", ["group-writable", "another-owner", "not-an-archive", "empty", "a-symlink"])
def test_a_template_that_is_not_the_agents_own_or_does_not_unpack_is_made_again_by_the_installer(place, fault):
    if fault == "another-owner" and os.geteuid() != 0:
        pytest.skip("only root can give a file away")  # CI runs the suite as root
    place.make()
    archive = place.template()
    if fault == "group-writable":
        os.chmod(archive, 0o620)
    elif fault == "another-owner":
        os.chown(archive, 65534, 65534)
    elif fault == "empty":  # what a crash before the data reached the disk could leave: tar unpacks it to nothing
        archive.write_bytes(bytes(10240))
    elif fault == "a-symlink":  # not followed: neither read nor written through
        archive.unlink()
        archive.symlink_to(place.root / "elsewhere.tar")
    else:
        archive.write_bytes(b"not a tar archive" * 100)

    copied, data_dir = place.make()
    assert (copied, place.installer.runs) == (False, 2)
    kept = place.template().lstat()
    assert stat.S_ISREG(kept.st_mode) and stat.S_IMODE(kept.st_mode) == 0o600 and kept.st_uid == os.geteuid()
    copied, again = place.make()  # made again from that installer's run, and used
    assert (copied, place.installer.runs) == (True, 2) and _tree(again) == _tree(data_dir)
    assert not (place.root / "elsewhere.tar").exists()


def test_a_template_that_could_not_be_unpacked_for_a_passing_reason_is_kept(place, monkeypatch):
    # The fault real parts do not produce on demand: tar stopped (a full scratch disk, a timeout). Not the
    # template's fault: it stays, and the next instance uses it.
    from agents import process
    from agents.scratch import templates

    place.make()
    kept = place.template().read_bytes()
    real_run_tar = templates._run_tar

    def stopped(sandbox, argv, data_dir, **streams):
        if argv is templates._UNPACK:
            raise process.ProcessStopped(argv, "timeout", "no result after 300s", ())
        return real_run_tar(sandbox, argv, data_dir, **streams)

    monkeypatch.setattr(templates, "_run_tar", stopped)
    copied, data_dir = place.make()
    assert (copied, place.installer.runs) == (False, 2) and (data_dir / "PG_VERSION").exists()
    assert place.template().read_bytes() == kept
    monkeypatch.undo()
    assert place.make()[0] is True and place.installer.runs == 2


def test_what_a_template_holds_lands_only_in_the_instances_own_directory(place, tmp_path):
    place.make()
    outside = tmp_path / "outside-the-sandbox"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in (str(outside), "../outside-the-sandbox"):
            member = tarfile.TarInfo(name)
            member.size = 4
            archive.addfile(member, io.BytesIO(b"evil"))
    place.template().write_bytes(buffer.getvalue())
    copied, _ = place.make()
    assert not outside.exists()
    # tar refuses such names itself (exit 2); the sandbox, which binds nothing but the instance's directory, would
    # hold them anyway. Either way the archive is not used, and the installer runs.
    assert (copied, place.installer.runs) == (False, 2)


def test_a_failure_of_the_template_itself_runs_the_installer(place, monkeypatch):
    # The fault real parts do not produce on demand: a bug in the template's code. The instance still starts.
    def broken(self: InstanceTemplate, data_dir: str, sandbox: Sandbox) -> bool:
        os.mkdir(data_dir)
        raise RuntimeError("a bug")

    place.make()
    monkeypatch.setattr(InstanceTemplate, "unpack", broken)
    copied, data_dir = place.make()
    assert (copied, place.installer.runs) == (False, 2) and (data_dir / "PG_VERSION").read_text() == "15\n"


def test_without_a_template_folder_the_installer_always_runs_and_a_failing_one_keeps_nothing(place):
    for _ in range(2):
        assert place.make(Path("none")) == (False, place.root / f"instance-{place.count}" / "data")
    assert place.installer.runs == 2 and not place.templates.exists()

    def broken() -> None:
        raise RuntimeError("initdb failed")

    place.installer = broken  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="initdb failed"):
        place.make()
    assert not place.templates.exists() or not any(place.templates.iterdir())


def test_a_binary_that_is_not_there_means_no_template_not_a_failure(place):
    place.binary.unlink()
    for _ in range(2):
        assert place.make()[0] is False
    assert place.installer.runs == 2 and not place.templates.exists()
