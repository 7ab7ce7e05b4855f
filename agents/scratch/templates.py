"""Empty data directories made once and copied: how a throwaway instance starts without its installer.

A verification restores a dump into a throwaway instance whose data directory an installer makes empty
(``initdb``, ``mariadb-install-db``): a second or more of every verification, on the path before the load can start.
What an installer makes holds no tenant data and is the same each time for the same installer, arguments and
binaries, so the agent keeps the first one it makes -- copied before any server has run on it -- and copies it for
each later instance, which takes a tenth of the time.

A template is the agent's own: in its state directory, owned by its account, nothing group- or other-writable, only
plain files and directories (anything else and it is not used, and removed). The sandboxed servers that load
tenants' dumps run under another account and see none of it (the sandbox binds only their own scratch directory).
It is keyed by what made it -- the installer's arguments (without the data directory's path) and each binary's
identity (path, size, mtime, inode) -- so an upgraded PostgreSQL or MariaDB gets a new template and the old one is
removed. Failing to use or keep one is logged and the installer runs as before: a template only saves time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence

from agents.scratch.account import InstanceAccount

log = logging.getLogger(__name__)

# Changed whenever what a template holds or how it is copied changes: older templates are then made again.
FORMAT = 1
# A copy left half-made by a process that died is removed once it is this old (a live copy takes a second).
STALE_AFTER = 3600.0
_DATA_DIR = "{data_dir}"


class UnusableTemplate(Exception):
    """A template holds something other than the agent's own plain files and directories."""


def make_data_dir(
    folder: str | None, kind: str, installer: Sequence[str], data_dir: str, binaries: Sequence[str],
    account: InstanceAccount, run_installer: Callable[[], None],
) -> bool:
    """Make ``data_dir``: a copy of the template of ``kind`` in ``folder`` when there is one, else by
    ``run_installer`` (which runs ``installer``), and then keep it as the template. ``binaries``: the programs
    whose identity the template depends on (found on PATH when not absolute). ``folder`` None: no template.

    Returns True when it was copied. Raises what ``run_installer`` raises.
    """
    template = None
    if folder is not None:
        found = [binary if os.path.isabs(binary) else shutil.which(binary) for binary in binaries]
        try:
            if all(found):
                template = InstanceTemplate(folder, kind, installer, data_dir, [path for path in found if path])
        except OSError as error:
            log.info("no %s instance template (%s)", kind, error)
    if template is not None and template.copy_to(data_dir, account):
        return True
    run_installer()
    if template is not None:
        template.keep(data_dir)
    return False


class InstanceTemplate:
    """The template of one kind of instance (``kind``, e.g. ``postgres``) in ``folder``, made by ``installer``
    (its argv, with the data directory's path as ``data_dir``) run by ``binaries`` (paths)."""

    def __init__(self, folder: str, kind: str, installer: Sequence[str], data_dir: str,
                 binaries: Sequence[str]) -> None:
        self.folder = folder
        self.kind = kind
        recipe = [arg.replace(data_dir, _DATA_DIR) for arg in installer]
        identities = []
        for binary in binaries:
            st = os.stat(binary)  # raises OSError: then there is no template (the installer fails on its own)
            identities.append([os.path.realpath(binary), st.st_size, st.st_mtime_ns, st.st_ino])
        key = json.dumps([FORMAT, kind, recipe, identities], separators=(",", ":")).encode()
        self.path = os.path.join(folder, f"{kind}-{hashlib.sha256(key).hexdigest()[:24]}")

    def copy_to(self, data_dir: str, account: InstanceAccount) -> bool:
        """Make ``data_dir`` (which must not exist) a copy of the template, owned by ``account``.

        Returns False when there is no template or it cannot be used (said in the log; an unusable one is removed);
        ``data_dir`` then does not exist.
        """
        try:
            top = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError as error:
            log.warning("cannot read the %s instance template %s (%s); running its installer", self.kind,
                        self.path, error)
            return False
        try:
            _check_own(self.path, top)
            _copy_tree(self.path, data_dir, owner=(account.uid, account.gid) if account.switch else None,
                       check_own=True)
            return True
        except (OSError, UnusableTemplate) as error:
            log.warning("the %s instance template %s cannot be used (%s); running its installer", self.kind,
                        self.path, error)
            if isinstance(error, UnusableTemplate):
                shutil.rmtree(self.path, ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)
            return False

    def keep(self, data_dir: str) -> None:
        """Keep ``data_dir``, fresh from the installer (no server has run on it), as the template, unless one is
        there already; remove the templates of this kind that older binaries made. Never raises: a template
        not kept is said in the log."""
        if os.path.isdir(self.path):
            return
        partial = f"{os.path.dirname(self.path)}/.partial-{os.path.basename(self.path)}-{os.getpid()}-{time.time_ns()}"
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            _copy_tree(data_dir, partial, strip=stat.S_IWGRP | stat.S_IWOTH)
            try:
                os.rename(partial, self.path)
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # else another job kept one first
                    raise
        except (OSError, UnusableTemplate) as error:
            log.warning("could not keep the %s instance template (%s); the next instance runs its installer too",
                        self.kind, error)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self._remove_others()

    def _remove_others(self) -> None:
        """Templates of this kind other than this one (older binaries), and copies left half-made long ago."""
        mine = os.path.basename(self.path)
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.folder, name)
            if name.startswith(f"{self.kind}-") and name != mine:
                shutil.rmtree(path, ignore_errors=True)
            elif name.startswith(f".partial-{self.kind}-"):
                with contextlib.suppress(OSError):
                    if time.time() - os.lstat(path).st_mtime > STALE_AFTER:
                        shutil.rmtree(path, ignore_errors=True)


def _check_own(path: str, st: os.stat_result) -> None:
    """Raises :class:`UnusableTemplate` unless ``path`` (``st`` its lstat) is a plain file or directory of the
    agent's account that nobody else may write."""
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise UnusableTemplate(f"{path} is neither a plain file nor a directory")
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnusableTemplate(f"{path} is not the agent's own, or others may write it")


def _copy_tree(source: str, destination: str, *, owner: tuple[int, int] | None = None, strip: int = 0,
               check_own: bool = False) -> None:
    """Copy directory ``source`` to ``destination`` (created; must not exist), modes kept less ``strip``, owned by
    ``owner`` (uid, gid) when given, else by the agent. Never follows a symbolic link, on either side.

    Raises OSError, and :class:`UnusableTemplate` when ``source`` holds anything but plain files and directories,
    or with ``check_own`` anything :func:`_check_own` refuses.
    """
    os.mkdir(destination, 0o700)
    directories = [(source, destination, os.lstat(source))]
    done: list[tuple[str, int]] = []
    while directories:
        here, there, st = directories.pop()
        with os.scandir(here) as entries:
            for entry in entries:
                entry_st = entry.stat(follow_symlinks=False)
                if check_own:
                    _check_own(entry.path, entry_st)
                target = os.path.join(there, entry.name)
                if stat.S_ISDIR(entry_st.st_mode):
                    os.mkdir(target, 0o700)
                    directories.append((entry.path, target, entry_st))
                elif stat.S_ISREG(entry_st.st_mode):
                    _copy_file(entry.path, target, stat.S_IMODE(entry_st.st_mode) & ~strip, owner)
                else:
                    raise UnusableTemplate(f"{entry.path} is neither a plain file nor a directory")
        done.append((there, stat.S_IMODE(st.st_mode) & ~strip))
    for path, mode in done:  # a directory's own mode last: a read-only one must still take its entries
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _copy_file(source: str, target: str, mode: int, owner: tuple[int, int] | None) -> None:
    reader = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        writer = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while os.sendfile(writer, reader, None, 1 << 30):
                pass
            if owner is not None:
                os.fchown(writer, *owner)
            os.fchmod(writer, mode)
        finally:
            os.close(writer)
    finally:
        os.close(reader)
