"""How a files manifest is stored: a compact binary form, and reading the JSON form of earlier backups.

A manifest is written once, inside its snapshot, and read back by every verification, by the next incremental
(as its base) and by auditors' tools; it is untrusted when read (it comes from a repository), so reading it
checks everything a comparison relies on. The digest the signed record vouches for covers these exact bytes.

Layout of ``drill.manifest.files/v2`` (integers little-endian), in the order a streaming writer knows things:

* :data:`MAGIC`, one line;
* the head: a u32 length and canonical JSON of what is known before the walk (algorithm, host, policy, target,
  job, level, base, roots, excludes);
* blocks of at most :data:`BLOCK_ENTRIES` entries, each: a u32 entry count, a u64 length and the block's columns
  compressed with xz (LZMA preset 0: fast, and names compress well), then the content digests of its files and
  symlinks, raw, in entry order (incompressible: stored as they are); a count of 0 ends the blocks;
* the tail: a u32 length and canonical JSON of what is known after it (what could not be read, missing roots,
  totals with the entry count); nothing after it.

A block's columns, each in entry order: the names, NUL-separated (an entry whose parent directory is an entry
holds its name only; any other holds its absolute path); the distance back to the parent entry, counted over the
whole manifest (u32, 0 for none); the kind (u8: 0 file, 1 directory, 2 symlink; +128 when it changed while
hashed); size (u64); mode (u16); mtime, as the difference from the previous entry's in the block (u64, modulo
2^64); ctime minus mtime (u64, modulo 2^64); inode, as the difference from the previous entry's (u64, modulo
2^64). The numeric columns are byte-shuffled (every value's first byte, then every second byte, ...):
neighbouring values share their high bytes, which then compress to almost nothing. About 37 bytes a file are
stored, 32 of them the digest. Blocks let a reader or writer hold a bounded part of the manifest at a time
(but for the directories' paths, which names are resolved against).
"""

from __future__ import annotations

import array
import itertools
import json
import lzma
import os
import struct
import sys
from collections.abc import Mapping
from typing import Any

from targets import hashing
from targets.files.manifest import FileEntry, FilesManifest, ManifestError

MAGIC = b"drill.manifest.files/v2\n"
SCHEMA = "drill.manifest.files/v2"
LEGACY_SCHEMA = "drill.manifest.files/v1"
_KINDS = ("file", "dir", "symlink")
_KIND_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_CHANGED = 0x80
_MASK = (1 << 64) - 1
_SIGN = 1 << 63
# The numeric columns: (array type code, byte width), in the order they are stored.
_NUMERIC = (("I", 4), ("B", 1), ("Q", 8), ("H", 2), ("Q", 8), ("Q", 8), ("Q", 8))
_NUMERIC_WIDTH = sum(width for _, width in _NUMERIC)
BLOCK_ENTRIES = 1 << 16
# What a block's columns may expand to: the numeric columns, and names that are one path component (at most 255
# bytes on Linux) but for a few absolute roots. More is a decompression bomb, refused before it is held in memory.
_MAX_NAME_BYTES = 256
_ROOTS_ALLOWANCE = 1 << 20


def to_bytes(manifest: FilesManifest) -> bytes:
    """The stored form of ``manifest``: the bytes its digest covers. The same manifest gives the same bytes.

    Raises ValueError for an entry the format cannot hold (a digest of another algorithm, a mode above 0o7777):
    the walk never makes one.
    """
    entries = manifest.entries
    digest_size = hashing.DIGEST_SIZES[manifest.algorithm]
    parts = [MAGIC, _framed(_head_document(manifest))]
    directories: dict[str, int] = {}
    for start in range(0, len(entries), BLOCK_ENTRIES):
        block = entries[start:start + BLOCK_ENTRIES]
        compressed = lzma.compress(_columns(block, start, directories), format=lzma.FORMAT_XZ,
                                   check=lzma.CHECK_CRC32, preset=0)
        parts += [struct.pack("<IQ", len(block), len(compressed)), compressed,
                  _digests(block, manifest.algorithm, digest_size)]
    parts += [struct.pack("<I", 0), _framed(_tail_document(manifest))]
    return b"".join(parts)


def parse_manifest(data: bytes) -> FilesManifest:
    """Read a stored manifest back (this format, or the JSON of earlier backups).

    Raises :class:`ManifestError` when it is not one, or holds anything a comparison could be misled by: a path
    that is not absolute and normal, a name that is not one path component, a parent that is not a directory, a
    path twice, a field of the wrong type, a count that does not match, trailing bytes.
    """
    if data.startswith(MAGIC):
        return _parse_binary(data)
    if data[:1] == b"{":
        return _parse_legacy_json(data)
    raise ManifestError("not a files manifest (neither drill.manifest.files/v2 nor its JSON predecessor)")


def _canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _framed(document: Mapping[str, Any]) -> bytes:
    text = _canonical_json(document)
    return struct.pack("<I", len(text)) + text


def _head_document(manifest: FilesManifest) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "algorithm": manifest.algorithm,
        "host": manifest.host,
        "policy": manifest.policy,
        "target": manifest.target,
        "job_id": manifest.job_id,
        "level": manifest.level,
        "base_snapshot_id": manifest.base_snapshot_id,
        "roots": manifest.roots,
        "exclude": manifest.exclude,
    }


def _tail_document(manifest: FilesManifest) -> dict[str, Any]:
    return {
        "unreadable": manifest.unreadable,
        "missing_roots": manifest.missing_roots,
        "totals": _totals(manifest),
    }


def _totals(manifest: FilesManifest) -> dict[str, int]:
    return {
        "files": manifest.files,
        "bytes": manifest.total_bytes,
        "entries": len(manifest.entries),
        "hashed_files": manifest.hashed_files,
        "hashed_bytes": manifest.hashed_bytes,
        "reused_hashes": manifest.reused_hashes,
        "changed_during_backup": len(manifest.changed_during_backup),
    }


def _little_endian(values: array.array[int]) -> bytes:
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def _shuffle(data: bytes, width: int) -> bytes:
    """Every value's first byte, then every value's second byte, ...: slicing, so at C speed."""
    return data if width == 1 else b"".join(data[i::width] for i in range(width))


def _unshuffle(data: bytes, width: int) -> bytes:
    if width == 1:
        return data
    count = len(data) // width
    out = bytearray(len(data))
    for i in range(width):
        out[i::width] = data[i * count:(i + 1) * count]
    return bytes(out)


def _differences(values: list[int]) -> list[int]:
    return [(value - previous) & _MASK for previous, value in zip([0, *values], values, strict=False)]


def _columns(block: list[FileEntry], start: int, directories: dict[str, int]) -> bytes:
    """The columns of the entries at positions ``start`` on; ``directories`` (path: position) grows as it goes."""
    names: list[bytes] = []
    parents: list[int] = []
    for position, entry in enumerate(block, start):
        parent, _, name = entry.path.rpartition("/")
        at = directories.get(parent)
        if at is not None:
            names.append(os.fsencode(name))
            parents.append(position - at)
        else:
            names.append(os.fsencode(entry.path))
            parents.append(0)
        if entry.type == "dir":
            directories[entry.path] = position
    numeric = (
        parents,
        [_KIND_CODES[e.type] | (_CHANGED if e.changed_during_backup else 0) for e in block],
        [e.size for e in block],
        [e.mode for e in block],
        _differences([e.mtime_ns for e in block]),
        [(e.ctime_ns - e.mtime_ns) & _MASK for e in block],
        _differences([e.inode for e in block]),
    )
    parts = [b"\0".join(names)]
    for values, (code, width) in zip(numeric, _NUMERIC, strict=True):
        parts.append(_shuffle(_little_endian(array.array(code, values)), width))
    return b"".join(parts)


def _digests(entries: list[FileEntry], algorithm: str, size: int) -> bytes:
    prefix = algorithm + ":"
    out = bytearray()
    for entry in entries:
        if entry.type == "dir":
            continue
        if entry.hash is None or not entry.hash.startswith(prefix) or len(entry.hash) != len(prefix) + 2 * size:
            raise ValueError(f"{entry.path}: digest {entry.hash!r} is not a {algorithm} digest")
        out += bytes.fromhex(entry.hash[len(prefix):])
    return bytes(out)


class _Reader:
    """Reads the sections of a stored manifest in order; any shortfall is a :class:`ManifestError`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = len(MAGIC)

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise ManifestError(f"manifest ends inside its {what}")
        part = self.data[self.at:self.at + size]
        self.at += size
        return part

    def number(self, fmt: str, what: str) -> int:
        value: int = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]
        return value

    def document(self, what: str) -> dict[str, Any]:
        try:
            document = json.loads(self.take(self.number("<I", f"{what} length"), what))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {what} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ManifestError(f"manifest {what} is not a JSON object")
        return document


class _Resolver:
    """Turns stored names into absolute paths, holding the directories' paths (only) by position."""

    def __init__(self) -> None:
        self.directories: dict[int, str] = {}
        self.seen: set[str] = set()

    def path(self, position: int, distance: int, name: bytes, kind: str) -> str:
        """Raises :class:`ManifestError` for anything that could lead a comparison elsewhere than the tree it
        restored, or a path named twice."""
        text = os.fsdecode(name)
        if distance == 0:
            path = _checked_absolute(text)
        else:
            parent = self.directories.get(position - distance)
            if parent is None:
                raise ManifestError(f"manifest entry {text[:200]!r}: its parent is not a directory entry before it")
            if not name or name in (b".", b"..") or b"/" in name:
                raise ManifestError(f"manifest entry name {text[:200]!r} is not one path component")
            path = f"{parent}/{text}"
        if path in self.seen:
            raise ManifestError(f"manifest names {path[:200]!r} twice")
        self.seen.add(path)
        if kind == "dir":
            self.directories[position] = path
        return path


def _parse_binary(data: bytes) -> FilesManifest:
    reader = _Reader(data)
    head = reader.document("head")
    if head.get("schema") != SCHEMA:
        raise ManifestError("manifest head is not a drill.manifest.files/v2 head")
    algorithm = head.get("algorithm")
    if algorithm not in hashing.DIGEST_SIZES:
        raise ManifestError(f"manifest hash algorithm {str(algorithm)[:40]!r} is not one this version reads")
    entries: list[FileEntry] = []
    resolver = _Resolver()
    while count := reader.number("<I", "block count"):
        columns = _decompress(reader.take(reader.number("<Q", "block length"), "block"), count)
        entries += _block_entries(columns, count, len(entries), algorithm, reader, resolver)
    tail = reader.document("tail")
    if reader.at != len(data):
        raise ManifestError(f"manifest has {len(data) - reader.at} bytes after its tail")
    manifest = _metadata({**head, **tail})
    manifest.entries = entries
    if tail["totals"].get("entries") != len(entries):
        raise ManifestError(f"manifest tail counts {tail['totals'].get('entries')!r} entries, its blocks hold "
                            f"{len(entries)}")
    return manifest


def _decompress(compressed: bytes, count: int) -> bytes:
    if count > BLOCK_ENTRIES:
        raise ManifestError(f"manifest block of {count} entries; a block holds at most {BLOCK_ENTRIES}")
    limit = count * (_NUMERIC_WIDTH + _MAX_NAME_BYTES) + _ROOTS_ALLOWANCE
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        columns = decompressor.decompress(compressed, max_length=limit)
    except lzma.LZMAError as exc:
        raise ManifestError(f"manifest block does not decompress: {exc}") from exc
    if not decompressor.eof:
        raise ManifestError("manifest block is truncated, or expands beyond any manifest's size (not read on)")
    if decompressor.unused_data:
        raise ManifestError("manifest block is followed by bytes that are not part of it")
    return columns


def _numeric(columns: bytes, at: int, count: int) -> list[list[int]]:
    values = []
    for code, width in _NUMERIC:
        size = count * width
        column = array.array(code)
        column.frombytes(_unshuffle(columns[at:at + size], width))
        if sys.byteorder != "little":
            column.byteswap()
        values.append(column.tolist())
        at += size
    return values


def _signed(value: int) -> int:
    return (value ^ _SIGN) - _SIGN


def _block_entries(
    columns: bytes, count: int, start: int, algorithm: str, reader: _Reader, resolver: _Resolver
) -> list[FileEntry]:
    # The names end at the NUL before the numeric columns, whose size the count gives.
    numeric_size = count * _NUMERIC_WIDTH
    if len(columns) < numeric_size:
        raise ManifestError("manifest block is shorter than its entry count needs")
    names = columns[:len(columns) - numeric_size].split(b"\0")
    if len(names) != count:
        raise ManifestError(f"manifest block counts {count} entries, its names column holds {len(names)}")
    parents, kinds, sizes, modes, mtime_steps, ctime_offsets, inode_steps = _numeric(
        columns, len(columns) - numeric_size, count)
    mtimes = [_signed(v & _MASK) for v in itertools.accumulate(mtime_steps)]
    inodes = [v & _MASK for v in itertools.accumulate(inode_steps)]
    digest_size = hashing.DIGEST_SIZES[algorithm]
    prefix = algorithm + ":"
    entries: list[FileEntry] = []
    for i in range(count):
        code = kinds[i]
        if (code & ~_CHANGED) >= len(_KINDS):
            raise ManifestError(f"manifest entry {start + i}: kind {code} is not a file, directory or symlink")
        kind = _KINDS[code & ~_CHANGED]
        path = resolver.path(start + i, parents[i], names[i], kind)
        digest = None if kind == "dir" else prefix + reader.take(digest_size, "digests").hex()
        mtime = mtimes[i]
        entries.append(FileEntry(path=path, type=kind, size=sizes[i], mode=modes[i], mtime_ns=mtime,
                                 ctime_ns=_signed((mtime + ctime_offsets[i]) & _MASK), inode=inodes[i],
                                 hash=digest, changed_during_backup=bool(code & _CHANGED)))
    return entries


def _checked_absolute(path: str) -> str:
    if not path.startswith("/") or os.path.normpath(path) != path or "\0" in path or path == "/":
        raise ManifestError(f"manifest entry path {path[:200]!r} is not an absolute, normal path")
    return path


def _metadata(doc: Mapping[str, Any]) -> FilesManifest:
    """Everything but the entries, from a v2 header or a v1 document; raises :class:`ManifestError`."""
    try:
        algorithm = doc["algorithm"]
        if algorithm not in hashing.ALGORITHMS:
            raise ManifestError(f"manifest hash algorithm {str(algorithm)[:40]!r} is not one this version reads")
        totals = doc["totals"]
        return FilesManifest(
            algorithm=algorithm,
            host=doc["host"],
            policy=doc["policy"],
            target=doc["target"],
            job_id=doc["job_id"],
            level=doc["level"],
            roots=list(doc["roots"]),
            exclude=list(doc["exclude"]),
            unreadable=list(doc["unreadable"]),
            missing_roots=list(doc["missing_roots"]),
            base_snapshot_id=doc["base_snapshot_id"],
            hashed_files=totals["hashed_files"],
            hashed_bytes=totals["hashed_bytes"],
            reused_hashes=totals["reused_hashes"],
        )
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"manifest is missing or has a malformed field: {exc}") from exc


# --- the JSON form written by earlier versions (drill.manifest.files/v1): read, never written ---

_ENTRY_TYPES = {"path": str, "type": str, "size": int, "mode": int, "mtime_ns": int, "ctime_ns": int, "inode": int}


def _parse_legacy_json(data: bytes) -> FilesManifest:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != LEGACY_SCHEMA:
        raise ManifestError(f"not a files manifest (schema {doc.get('schema') if isinstance(doc, dict) else None!r})")
    manifest = _metadata(doc)
    try:
        manifest.entries = [_legacy_entry(e) for e in doc["entries"]]
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"manifest is missing or has a malformed field: {exc}") from exc
    return manifest


def _legacy_entry(raw: object) -> FileEntry:
    if not isinstance(raw, dict) or not set(_ENTRY_TYPES) <= set(raw):
        raise ManifestError(f"manifest entry {str(raw)[:120]!r} lacks fields")
    for name, kind in _ENTRY_TYPES.items():
        value = raw[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ManifestError(f"manifest entry {str(raw.get('path'))[:120]!r}: {name} is not {kind.__name__}")
    path = _checked_absolute(raw["path"])
    if raw["type"] not in _KIND_CODES or not (raw.get("hash") is None or isinstance(raw.get("hash"), str)):
        raise ManifestError(f"manifest entry {path[:200]!r}: type {str(raw['type'])[:20]!r} or its hash is not valid")
    return FileEntry(path=path, type=raw["type"], size=raw["size"], mode=raw["mode"], mtime_ns=raw["mtime_ns"],
                     ctime_ns=raw["ctime_ns"], inode=raw["inode"], hash=raw.get("hash"),
                     changed_during_backup=bool(raw.get("changed_during_backup", False)))
