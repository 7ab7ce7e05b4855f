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


# -- a throwaway instance to restore into ---------------------------------------------

def make_initdb_command(bin_dir: str, data_dir: str, superuser: str) -> tuple[str, ...]:
    """A new cluster for one verification: trust auth on its private socket only, no fsync (it is thrown away)."""
    return (f"{bin_dir}/initdb", "--pgdata", data_dir, "--username", superuser, "--auth=trust", "--encoding=UTF8",
            "--locale=C.UTF-8", "--no-sync", "--no-instructions")


# A throwaway cluster loads one dump and is thrown away: no durability, no WAL for a table loaded in the transaction
# that created it (wal_level=minimal; the loader takes a small schema in one transaction), more memory for building
# its indexes, and room in the lock table for that one transaction (1,024 × about 110 backends: ≈ 110,000 locks).
THROWAWAY_SETTINGS = ("fsync=off", "full_page_writes=off", "wal_level=minimal", "max_wal_senders=0",
                      "maintenance_work_mem=128MB", "max_locks_per_transaction=1024")
# At most this many tables (by the manifest) are loaded in one transaction: each holds its locks (table, TOAST,
# indexes, sequences) until the commit, ≈ 20 at most for an ordinary table, well inside the lock table above.
SINGLE_TRANSACTION_TABLES = 2000


def make_server_command(bin_dir: str, data_dir: str, socket_dir: str, port: int, log_dir: str) -> tuple[str, ...]:
    """Run the cluster in the foreground on its unix socket in ``socket_dir`` only (no TCP), logging to
    ``log_dir/server.log``, with :data:`THROWAWAY_SETTINGS` (it is thrown away)."""
    settings = [arg for setting in THROWAWAY_SETTINGS for arg in ("-c", setting)]
    return (f"{bin_dir}/postgres", "-D", data_dir, "-k", socket_dir, "-p", str(port), "-c", "listen_addresses=",
            *settings, "-c", "logging_collector=on",
            "-c", f"log_directory={log_dir}", "-c", "log_filename=server.log", "-c", "log_rotation_size=0")


def make_pg_ctl_start_command(bin_dir: str, data_dir: str, socket_dir: str, port: int, log_file: str,
                              timeout: int) -> tuple[str, ...]:
    """Start the cluster listening on its unix socket in ``socket_dir`` only (no TCP), wait until it accepts."""
    options = f"-c listen_addresses='' -k {socket_dir} -p {port} -c fsync=off -c full_page_writes=off"
    return (f"{bin_dir}/pg_ctl", "--pgdata", data_dir, "--log", log_file, "--wait", "--timeout", str(timeout),
            "--options", options, "start")


def make_pg_ctl_stop_command(bin_dir: str, data_dir: str) -> tuple[str, ...]:
    """Stop at once: nothing in a throwaway cluster needs a clean shutdown."""
    return (f"{bin_dir}/pg_ctl", "--pgdata", data_dir, "--mode", "immediate", "--wait", "stop")


def make_pg_restore_command(
    binary: str, *, host: str, port: int, user: str | None, database: str, single_transaction: bool = False
) -> tuple[str, ...]:
    """Restore a custom-format dump read from stdin into the existing ``database``.

    Without owners and privileges: the scratch side has none of production's roles. ``single_transaction``: in one
    transaction, stopping at the first error (a throwaway cluster's, whose ``wal_level=minimal`` then writes no WAL
    for the tables' data).
    """
    argv = [binary, "--no-owner", "--no-privileges", "--no-password", "--host", host, "--port", str(port)]
    if single_transaction:
        argv.append("--single-transaction")
    if user:
        argv += ["--username", user]
    argv += ["--dbname", database]
    return tuple(argv)


def make_pgpass_line(host: str, port: int, user: str | None, password: str) -> str:
    """One ``.pgpass`` line for any database on ``host:port`` (``\\`` and ``:`` escaped)."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return ":".join([escape(host), str(port), "*", escape(user or "*"), escape(password)]) + "\n"
