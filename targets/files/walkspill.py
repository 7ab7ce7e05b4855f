"""The walk of a files target, kept on disk between the agent's stat of each entry and its hashing.

A backup stats every entry before restic starts, then hashes beside restic (``agents/jobs/backup.py``): the walk
is what restic's exclusions come from, and a stat taken before restic can read a file is what makes a file that
changed afterwards visible at the end (``agents/jobs/restat.py``). Between the two the entries wait here, not in
memory: a record per entry (kind, mode, size, mtime, ctime, inode, path), written and read back in walk order, so
the agent holds one buffer however many files there are.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import IO

from targets.files.select import Found, WalkedStat

_KINDS = ("file", "dir", "symlink")
_CODES = {kind: code for code, kind in enumerate(_KINDS)}
# kind, mode, path length, size, mtime, ctime, inode
_RECORD = struct.Struct("<BIIqqqQ")
_CHUNK = 1 << 20


def write(found: Iterable[Found], handle: IO[bytes]) -> int:
    """Write every entry of ``found`` to ``handle`` (opened for binary writing); returns how many."""
    pack = _RECORD.pack
    count = 0
    buffer = bytearray()
    for item in found:
        st = item.st
        path = item.path.encode("utf-8", "surrogateescape")
        buffer += pack(_CODES[item.kind], st.st_mode, len(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                       st.st_ino)
        buffer += path
        count += 1
        if len(buffer) >= _CHUNK:
            handle.write(buffer)
            buffer.clear()
    handle.write(buffer)
    return count


def read(handle: IO[bytes]) -> Iterator[Found]:
    """The entries :func:`write` wrote to ``handle``, in order, each with the stat the walk took.

    Raises ValueError for a file that ends inside a record (never written by :func:`write`)."""
    unpack, size = _RECORD.unpack_from, _RECORD.size
    pending = b""
    while True:
        chunk = handle.read(_CHUNK)
        data = pending + chunk
        offset = 0
        while len(data) - offset >= size:
            kind, mode, length, st_size, mtime_ns, ctime_ns, inode = unpack(data, offset)
            end = offset + size + length
            if end > len(data):
                break
            path = data[offset + size:end].decode("utf-8", "surrogateescape")
            yield Found(path, _KINDS[kind], WalkedStat(mode, st_size, mtime_ns, ctime_ns, inode))
            offset = end
        pending = data[offset:]
        if not chunk:
            if pending:
                raise ValueError("the walk's spill ends inside a record")
            return
