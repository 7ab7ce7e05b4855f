"""Pure builders of the commands of a throwaway MariaDB/MySQL instance and of loading a dump into it.

Credentials never appear: a scratch server's password goes in a
``--defaults-extra-file``; the throwaway instance's root has no password and
only a unix socket.
"""

from __future__ import annotations


def make_dump_command(binary: str, database: str, *, defaults_file: str | None) -> tuple[str, ...]:
    """A consistent SQL dump of ``database`` to stdout, its own transaction started at once.

    Options MySQL 8's mysqldump accepts too; no ``--databases``, so a restore may pick another name.
    """
    argv = [binary]
    if defaults_file:
        argv.append(f"--defaults-extra-file={defaults_file}")  # must come first
    # The largest packet the protocol allows: a row as long as the server accepts is read whole.
    argv += ["--single-transaction", "--quick", "--routines", "--triggers", "--events", "--hex-blob",
             "--default-character-set=utf8mb4", "--no-tablespaces", "--max-allowed-packet=1G", database]
    return tuple(argv)


def make_install_db_command(binary: str, data_dir: str) -> tuple[str, ...]:
    """Initialise a data directory (MariaDB's installer; for MySQL 8 configure ``mysqld`` instead)."""
    if binary.endswith(("mysqld", "mariadbd")):
        return (binary, "--no-defaults", "--initialize-insecure", f"--datadir={data_dir}")
    return (binary, "--no-defaults", f"--datadir={data_dir}", "--auth-root-authentication-method=normal",
            "--skip-test-db", "--skip-name-resolve")


def make_server_command(binary: str, data_dir: str, socket: str, pid_file: str, log_file: str) -> tuple[str, ...]:
    """Run the server on ``socket`` only (no TCP), small buffers, no durability (it is thrown away)."""
    return (binary, "--no-defaults", f"--datadir={data_dir}", f"--socket={socket}", "--skip-networking",
            f"--pid-file={pid_file}", f"--log-error={log_file}", "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--max-allowed-packet=1G")


def make_load_command(
    client: str, *, database: str, socket: str | None = None, defaults_file: str | None = None,
    user: str = "root", sandbox: bool = True,
) -> tuple[str, ...]:
    """Load an SQL dump read from stdin into ``database``; stop at the first error.

    ``sandbox``: refuse the client's own commands in the dump (``\\!``, ``system``, ``source``, ``tee``), for a
    client that knows ``--sandbox`` (MariaDB's, since 10.5.25/10.6.18/10.11.8).
    """
    argv = [client]
    argv.append(f"--defaults-extra-file={defaults_file}" if defaults_file else "--no-defaults")  # must come first
    if socket:
        argv += [f"--socket={socket}", f"--user={user}"]
    if sandbox:
        argv.append("--sandbox")
    # A dump's INSERT of one long row (binary as hex doubles it) can exceed the client's default 16 MiB; the
    # throwaway server takes 1 GiB.
    argv += ["--default-character-set=utf8mb4", "--batch", "--max-allowed-packet=1G", database]
    return tuple(argv)


def make_client_defaults(host: str, port: int, user: str, password: str | None) -> str:
    """A ``[client]`` option file (for ``--defaults-extra-file``): the password never goes on argv."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[client]", f"host={host}", f"port={port}", f"user={quoted(user)}"]
    if password is not None:
        lines.append(f"password={quoted(password)}")
    return "\n".join(lines) + "\n"
