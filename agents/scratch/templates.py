"""Empty data directories made once and unpacked: how a throwaway instance starts without its installer.

A verification restores a dump into a throwaway instance whose data directory an installer makes empty
(``initdb``, ``mariadb-install-db``): a second or more of every verification, on the path before the load can start.
What an installer makes holds no tenant data and is the same each time for the same installer, arguments and
binaries, so the agent keeps the first one it makes -- packed before any server has run on it -- and unpacks that
for each later instance, in a fraction of the time.

A template is one ``tar`` archive, the agent's own: in its state directory, owned by its account, nothing group- or
other-writable (else it is removed and made again). It is packed and unpacked by ``tar`` in the instance's sandbox
as the instance's account, the archive on ``tar``'s stdin or stdout: whatever an archive holds can land only in that
instance's scratch directory, and the sandboxed servers that load tenants' dumps never see the templates' folder. A
template is keyed by what made it -- the installer's arguments (without the data directory's path) and each binary's
identity (path, size, mtime, inode) -- so an upgraded PostgreSQL or MariaDB gets a new one and the old one is
removed. Failing to use or keep one is logged and the installer runs as before: a template only saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from typing import IO

from agents import process
from agents.scratch.sandbox import Sandbox
from agents.state import sync_folder

log = logging.getLogger(__name__)

# Changed whenever what a template holds or how it is packed changes: older templates are then made again.
FORMAT = 1
# An archive left half-written by a process that died is removed once it is this old (a live one takes a second).
STALE_AFTER = 3600.0
# How long packing or unpacking an empty data directory may take (a second, usually).
TAR_TIMEOUT = 300
_DATA_DIR = "{data_dir}"


def make_data_dir(
    folder: str | None, kind: str, installer: Sequence[str], data_dir: str, binaries: Sequence[str],
    markers: Sequence[str], sandbox: Sandbox, run_installer: Callable[[], None],
) -> bool:
    """Make ``data_dir`` (inside ``sandbox``'s directory): unpacked from the template of ``kind`` in ``folder``
    when there is one, else by ``run_installer`` (which runs ``installer``) and then packed as the template.
    ``binaries``: the programs the template depends on (looked up on PATH when not absolute). ``markers``: paths
    (relative to ``data_dir``) an installer's output always has, which an unpacked template must have too.
    ``folder`` None: no template.

    Returns True when it was unpacked from a template. Raises what ``run_installer`` raises, and nothing else: a
    template only saves time, so any failure of its own (a bug included) is said in the log and the installer runs.
    """
    template = None
    try:
        template = _template(folder, kind, installer, data_dir, binaries, markers)
        if template is not None and template.unpack(data_dir, sandbox):
            return True
    except Exception:
        log.exception("the %s instance template failed; running the installer", kind)
        shutil.rmtree(data_dir, ignore_errors=True)
        template = None
    run_installer()
    if template is not None:
        try:
            template.keep(data_dir, sandbox)
        except Exception:
            log.exception("could not keep the %s instance template", kind)
    return False


def _template(folder: str | None, kind: str, installer: Sequence[str], data_dir: str, binaries: Sequence[str],
              markers: Sequence[str]) -> InstanceTemplate | None:
    """The template for these, or None (no folder, a binary not found)."""
    if folder is None:
        return None
    found = [binary if os.path.isabs(binary) else shutil.which(binary) for binary in binaries]
    try:
        if all(found):
            return InstanceTemplate(folder, kind, installer, data_dir, [path for path in found if path], markers)
    except OSError as error:
        log.info("no %s instance template (%s)", kind, error)
    return None


class UnusableTemplate(Exception):
    """A template archive that is not the agent's own, that others may write, or that unpacks to something an
    installer never makes."""


# What an installer also reads besides its binaries: initdb copies the system's locales into the new cluster's
# collations, so a locale installed since (``locale-gen``) means a new template.
SYSTEM_INPUTS = ("/usr/lib/locale", "/usr/lib/locale/locale-archive")


class InstanceTemplate:
    """The template of one kind of instance (``kind``, e.g. ``postgres``) in ``folder``, made by ``installer``
    (its argv, the data directory's path being ``data_dir``) with ``binaries`` (paths); an unpacked one must hold
    ``markers`` (paths relative to the data directory).

    Raises OSError when a binary cannot be found.
    """

    def __init__(self, folder: str, kind: str, installer: Sequence[str], data_dir: str, binaries: Sequence[str],
                 markers: Sequence[str] = ()) -> None:
        self.folder = folder
        self.kind = kind
        self.markers = tuple(markers)
        recipe = [arg.replace(data_dir, _DATA_DIR) for arg in installer]
        identities: list[object] = []
        for binary in binaries:
            st = os.stat(binary)
            identities.append([os.path.realpath(binary), st.st_size, st.st_mtime_ns, st.st_ino])
        for path in SYSTEM_INPUTS:
            try:
                st = os.stat(path)
                identities.append([path, st.st_size, st.st_mtime_ns, st.st_ino])
            except OSError:
                identities.append([path, None])
        key = json.dumps([FORMAT, kind, recipe, identities], separators=(",", ":")).encode()
        self.path = os.path.join(folder, f"{kind}-{hashlib.sha256(key).hexdigest()[:24]}.tar")

    def unpack(self, data_dir: str, sandbox: Sandbox) -> bool:
        """Make ``data_dir`` (which must not exist) from the template, in ``sandbox`` as its account.

        Returns False when there is no template or it could not be used (said in the log); ``data_dir`` then does
        not exist. One that is not the agent's own, does not unpack or lacks a marker is removed (this instance's
        installer makes it again); one that failed for another reason (a full disk, a timeout) is kept.
        """
        try:
            handle = open(self.path, "rb", opener=_no_follow)  # noqa: SIM115 -- closed below, after tar read it
        except FileNotFoundError:
            return False
        except OSError as error:
            log.warning("cannot read the %s instance template %s (%s); running its installer", self.kind,
                        self.path, error)
            return False
        unusable = False
        with handle:
            try:
                _check_own(self.path, os.fstat(handle.fileno()))
                sandbox.account.make_own_directory(data_dir)
                # --preserve-permissions: the modes as the installer made them (PostgreSQL insists on 0700).
                _run_tar(sandbox, _UNPACK, data_dir, stdin=handle)
                missing = [marker for marker in self.markers if not os.path.lexists(os.path.join(data_dir, marker))]
                if missing:
                    raise UnusableTemplate(f"it unpacks without {', '.join(missing)}")
                return True
            except (UnusableTemplate, _TarFailed) as error:
                unusable = True
                log.warning("the %s instance template %s is not usable (%s); running its installer", self.kind,
                            self.path, error)
            except (OSError, process.ProcessStopped) as error:
                log.warning("the %s instance template %s could not be unpacked (%s); running its installer",
                            self.kind, self.path, error)
        shutil.rmtree(data_dir, ignore_errors=True)
        if unusable:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # made again from this instance's installer
        return False

    def keep(self, data_dir: str, sandbox: Sandbox) -> None:
        """Pack ``data_dir``, fresh from the installer (no server has run on it), as the template, in ``sandbox``
        as its account, unless there is one; remove the templates of this kind that older binaries made.
        Never raises: a template not kept is said in the log."""
        with contextlib.suppress(OSError, UnusableTemplate):
            _check_own(self.path, os.lstat(self.path))
            return  # one is there (a template that is not the agent's own plain file is replaced)
        partial = os.path.join(self.folder, f".partial-{os.path.basename(self.path)}-{os.getpid()}-{time.time_ns()}")
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            with open(partial, "xb", opener=_private) as handle:
                _run_tar(sandbox, _PACK, data_dir, stdout=handle)
                os.fsync(handle.fileno())  # a crash must not leave a template of zeros (which tar unpacks to nothing)
            os.rename(partial, self.path)
            sync_folder(self.folder)
        except (OSError, _TarFailed, process.ProcessStopped) as error:
            log.warning("could not keep the %s instance template (%s); the next instance runs its installer too",
                        self.kind, error)
            with contextlib.suppress(OSError):
                os.unlink(partial)
        self._remove_others()

    def _remove_others(self) -> None:
        """Templates of this kind other than this one (older binaries), and archives left half-written long ago."""
        mine = os.path.basename(self.path)
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.folder, name)
            with contextlib.suppress(OSError):
                older = name.startswith(f"{self.kind}-") and name != mine
                if older or (name.startswith(f".partial-{self.kind}-")
                             and time.time() - os.lstat(path).st_mtime > STALE_AFTER):
                    os.unlink(path)


class _TarFailed(Exception):
    """tar exited with an error."""


# Packing an installer's fresh output (no tenant data: a shell is allowed, as for the installer). Its larger files are
# mostly zeros, often preallocated (MariaDB's 96 MiB redo log holds 11 blocks that are not), which tar cannot tell
# from data: each is first copied with its zeros as holes, so that the archive stores it as sparse (MariaDB's archive
# 118 MB -> 7 MB) and unpacking writes only what is not zero. A file that cannot be copied so (a full disk) fails the
# packing, leaving the file as it was: no template is kept.
_SPARSE_COPY = ('for f; do cp --sparse=always --preserve=mode,timestamps "$f" "$f.sparse" && mv -f "$f.sparse" "$f" '
                '|| { rm -f "$f.sparse"; exit 1; }; done')
_PACK = ("sh", "-c", f'find "$1" -type f -size +1M -exec sh -c \'{_SPARSE_COPY}\' sparse {{}} + || exit 1; '
                     'exec tar --create --sparse --file=- --directory="$1" --numeric-owner .', "pack")
# Unpacking, with no shell: the modes as the installer made them (PostgreSQL insists on 0700), owned by the account.
_UNPACK = ("tar", "--extract", "--file=-", "--preserve-permissions", "--no-same-owner", "--directory")


def _run_tar(sandbox: Sandbox, argv: tuple[str, ...], data_dir: str, *, stdin: IO[bytes] | None = None,
             stdout: IO[bytes] | None = None) -> None:
    """Run ``argv`` (:data:`_PACK` or :data:`_UNPACK`) on ``data_dir`` in ``sandbox``, reading the archive from
    ``stdin`` or writing it to ``stdout`` (straight from or to the file: nothing passes through this process).
    Raises :class:`_TarFailed`, OSError (it is missing) or :class:`process.ProcessStopped` (it took longer than
    :data:`TAR_TIMEOUT`)."""
    result = process.run_process(sandbox.wrap((*argv, data_dir), with_shell=argv is _PACK),
                                 env=process.inherited_environment({}), timeout=TAR_TIMEOUT, stdin=stdin,
                                 stdout_to=stdout)
    if result.returncode != 0:
        raise _TarFailed(f"tar exited with {result.returncode}: {' '.join(result.stderr_tail)[-300:]}")


def _check_own(path: str, st: os.stat_result) -> None:
    """Raises :class:`UnusableTemplate` unless ``st`` (of ``path``) is a plain file of the agent's account that
    nobody else may write."""
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnusableTemplate(f"{path} is not a file of the agent's own that only it may write")


def _no_follow(path: str, flags: int) -> int:
    """Never through a symlink, and never waiting on a FIFO put in the archive's place (its type is checked
    next)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)
