"""Pure builders of pg_dump commands. Credentials never appear: PGPASSFILE carries the password."""

from __future__ import annotations


def make_pg_dump_command(
    binary: str, *, host: str, port: int, user: str | None, database: str, snapshot: str
) -> tuple[str, ...]:
    """Custom-format dump of ``database`` inside the exported ``snapshot``, to stdout.

    ``--no-password``: never prompt (a missing password is an error, not a hang).
    """
    argv = [binary, "--format=custom", "--no-password", f"--snapshot={snapshot}", "--host", host,
            "--port", str(port)]
    if user:
        argv += ["--username", user]
    argv += ["--dbname", database]
    return tuple(argv)


def make_pg_dumpall_globals_command(binary: str, *, host: str, port: int, user: str | None) -> tuple[str, ...]:
    """Roles and tablespaces as SQL, without password hashes (readable with pg_read_all_data)."""
    argv = [binary, "--globals-only", "--no-role-passwords", "--no-password", "--host", host, "--port", str(port)]
    if user:
        argv += ["--username", user]
    return tuple(argv)


def make_pg_dump_version_command(binary: str) -> tuple[str, ...]:
    return (binary, "--version")


def parse_pg_dump_major(output: str) -> int | None:
    """Major version from ``pg_dump (PostgreSQL) 15.20 (Debian …)``, or None."""
    for word in output.split():
        head = word.split(".")[0]
        if head.isdigit() and "." in word:
            return int(head)
    return None
