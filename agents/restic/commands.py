"""Pure builders of restic argv tuples: given options, return the command; run nothing.

Tested by equality. The repository and its password never appear here: they
reach restic through its environment (``RESTIC_REPOSITORY``,
``RESTIC_PASSWORD_FILE`` / ``RESTIC_PASSWORD_COMMAND``), see ``runner.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from agents.restic.features import ResticVersion


def make_global_flags(version: ResticVersion, cache_dir: str | None, *, json: bool) -> tuple[str, ...]:
    """Flags every command gets: JSON output, our own cache directory, bounded hangs."""
    flags: list[str] = []
    if json:
        flags.append("--json")
    if cache_dir is not None:
        flags += ["--cache-dir", cache_dir]
    else:
        flags.append("--no-cache")
    if version.has_stuck_request_timeout:
        flags += ["--stuck-request-timeout", "2m"]
    return tuple(flags)


def make_version_command(binary: str) -> tuple[str, ...]:
    return (binary, "version")


def make_init_command(binary: str, flags: tuple[str, ...]) -> tuple[str, ...]:
    return (binary, *flags, "init")


def make_cat_config_command(binary: str, flags: tuple[str, ...]) -> tuple[str, ...]:
    """A cheap command that opens the repository: used to fail fast when it is unreachable."""
    return (binary, *flags, "cat", "config")


def make_backup_command(
    binary: str,
    flags: tuple[str, ...],
    *,
    paths: Sequence[str],
    exclude_file: str | None,
    excludes: Sequence[str] = (),
    host: str,
    tags: Sequence[str],
    parent: str | None,
    force: bool,
    time: str | None = None,
) -> tuple[str, ...]:
    """Back up ``paths`` (restic walks them), leaving out what ``exclude_file`` and ``excludes`` name; ``time``
    (restic's ``--time`` form, :func:`snapshot_time_flag`) sets the snapshot's time instead of restic's clock.

    ``-vv`` makes restic report every file and directory it stores (``verbose_status``),
    which the agent compares with its manifest. ``--`` ends the options: a path is never
    read as one. Never add ``--ignore-ctime`` or ``--ignore-inode``: what restic reports
    ``unchanged`` is then no longer a file whose ctime it saw unmoved, which
    :mod:`agents.jobs.restat` relies on.
    """
    argv = [binary, *flags, "-vv", "backup", "--host", host]
    if exclude_file is not None:
        argv += ["--exclude-file", exclude_file]
    for pattern in excludes:
        argv += ["--exclude", pattern]
    for tag in tags:
        argv += ["--tag", tag]
    if force:
        argv.append("--force")
    elif parent is not None:
        argv += ["--parent", parent]
    if time is not None:
        argv += ["--time", time]
    return (*argv, "--", *paths)


def snapshot_time_flag(moment: datetime) -> str:
    """``moment`` as ``restic backup --time`` takes it: no zone, read in restic's local zone -- the child gets
    ``TZ=UTC`` beside it (:data:`SNAPSHOT_TIME_ZONE`), so the value is UTC. Microseconds follow the seconds (Go reads
    them though the layout has none), so that two backups in one second keep their order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# The zone restic reads a --time value in (its TZ variable), so that the agent knows the snapshot's time exactly.
SNAPSHOT_TIME_ZONE = {"TZ": "UTC"}


def make_backup_stdin_command(
    binary: str, flags: tuple[str, ...], *, filename: str, host: str, tags: Sequence[str], time: str | None = None
) -> tuple[str, ...]:
    """Store what arrives on stdin as one file named ``filename`` (``time`` as in :func:`make_backup_command`)."""
    argv = [binary, *flags, "backup", "--stdin", "--stdin-filename", filename, "--host", host]
    for tag in tags:
        argv += ["--tag", tag]
    if time is not None:
        argv += ["--time", time]
    return tuple(argv)


def make_snapshots_command(
    binary: str, flags: tuple[str, ...], *, host: str | None = None, snapshot_ids: Sequence[str] = ()
) -> tuple[str, ...]:
    argv = [binary, *flags, "snapshots"]
    if host is not None:
        argv += ["--host", host]
    argv += list(snapshot_ids)
    return tuple(argv)


def make_dump_command(binary: str, flags: tuple[str, ...], snapshot_id: str, path: str) -> tuple[str, ...]:
    return (binary, *flags, "dump", snapshot_id, path)


def make_copy_command(binary: str, flags: tuple[str, ...], snapshot_ids: Sequence[str]) -> tuple[str, ...]:
    """Copy snapshots from the ``RESTIC_FROM_REPOSITORY`` into the repository."""
    return (binary, *flags, "copy", *snapshot_ids)


def make_forget_command(binary: str, flags: tuple[str, ...], snapshot_ids: Sequence[str]) -> tuple[str, ...]:
    """Forget exactly these snapshots; which ones is decided by ``policies.retention``."""
    return (binary, *flags, "forget", *snapshot_ids)


def make_prune_command(binary: str, flags: tuple[str, ...]) -> tuple[str, ...]:
    return (binary, *flags, "prune")


def make_restore_command(binary: str, flags: tuple[str, ...], snapshot_id: str, target_dir: str) -> tuple[str, ...]:
    """Restore a whole snapshot under ``target_dir`` (restic keeps every path inside it)."""
    return (binary, *flags, "restore", snapshot_id, "--target", target_dir)


def make_check_command(binary: str, flags: tuple[str, ...], read_data_subset: str | None) -> tuple[str, ...]:
    """Check the repository's structure and, with ``read_data_subset`` ('n/t'), read that part of its packs."""
    argv = [binary, *flags, "check"]
    if read_data_subset is not None:
        argv += ["--read-data-subset", read_data_subset]
    return tuple(argv)


def make_unlock_command(binary: str, flags: tuple[str, ...]) -> tuple[str, ...]:
    """Remove stale locks only (those of dead processes); live locks stay."""
    return (binary, *flags, "unlock")
