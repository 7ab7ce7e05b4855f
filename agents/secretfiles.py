"""Secrets handed to a child process through a file only it reads: never argv, never the environment."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from agents.contract.configfile import MAX_SECRET_BYTES, FileRefusedError, read_text_file
from agents.state import StateDir


def read_password(path: str | None) -> str | None:
    """The password in the file at ``path`` (without its line end), or None when there is no file.

    Only a regular file of at most 64 KiB is read (a FIFO swapped in cannot block the job). Raises ``OSError``
    saying why it cannot be read.
    """
    if path is None:
        return None
    try:
        return read_text_file(path, MAX_SECRET_BYTES).rstrip("\n")
    except FileRefusedError as error:
        raise OSError(f"the password file {path} {error.reason}") from error


@contextlib.contextmanager
def private_file(state: StateDir, prefix: str, content: str) -> Iterator[str]:
    """A 0600 file in ``state_dir/tmp`` holding ``content``, removed on exit."""
    fd, path = tempfile.mkstemp(dir=state.sub("tmp"), prefix=prefix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
