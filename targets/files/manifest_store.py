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
stored, 32 of them the digest.

Entries are in walk order: a directory, then everything under it, each directory's names sorted -- ascending
by the path with "/" taken as the lowest character (:func:`targets.files.select.walk_order`). Reader and writer
insist on it: a path can then be named only once, a parent is one of the directories open on the way down, and
both hold one block and that chain of directories, however many files there are.
"""

from __future__ import annotations

import array
import hashlib
import io
import itertools
import json
import lzma
import os
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from targets import hashing
from targets.files.manifest import BaseCursor, BaseEntries, FileEntry, FilesManifest, ManifestError, index_entries
from targets.files.select import walk_order

MAGIC = b"drill.manifest.files/v2\n"
SCHEMA = "drill.manifest.files/v2"
LEGACY_SCHEMA = "drill.manifest.files/v1"
BLOCK_ENTRIES = 1 << 16
_KINDS = ("file", "dir", "symlink")
_KIND_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_CHANGED = 0x80
_MASK = (1 << 64) - 1
_SIGN = 1 << 63
# The numeric columns: (array type code, byte width), in the order they are stored.
_NUMERIC = (("I", 4), ("B", 1), ("Q", 8), ("H", 2), ("Q", 8), ("Q", 8), ("Q", 8))
_NUMERIC_WIDTH = sum(width for _, width in _NUMERIC)
# What a block's columns may expand to: the numeric columns, and names that are one path component (at most 255
# bytes on Linux) but for a few absolute roots. More is a decompression bomb, refused before it is held in memory.
_MAX_NAME_BYTES = 256
_ROOTS_ALLOWANCE = 1 << 20
_DOCUMENT_LIMIT = 64 << 20


@dataclass
class Totals:
    """What a writer counted."""

    files: int = 0
    bytes: int = 0
    entries: int = 0
    changed_during_backup: int = 0


class ManifestWriter:
    """Writes a manifest to ``handle`` entry by entry, in walk order, holding one block at a time.

    ``manifest`` gives the head now (its entries are not read); :meth:`finish` writes the tail. ``digest`` is
    the SHA-256 of everything written so far, as records name it.
    """

    def __init__(self, handle: IO[bytes], manifest: FilesManifest) -> None:
        self._handle = handle
        self._sha256 = hashlib.sha256()
        self._algorithm = manifest.algorithm
        self._digest_size = hashing.DIGEST_SIZES[manifest.algorithm]
        self._block: list[FileEntry] = []
        self._open: list[tuple[str, int]] = []  # the directories on the way down to the last entry: (path, position)
        self._last: str | None = None
        self.totals = Totals()
        self.size = 0
        self._write(MAGIC + _framed(_head_document(manifest)))

    def add(self, entry: FileEntry) -> None:
        """Raises ValueError for an entry out of walk order or that the format cannot hold (never made by a
        walk)."""
        key = walk_order(entry.path)
        if self._last is not None and key <= self._last:
            raise ValueError(f"{entry.path}: not after the previous entry in walk order")
        self._last = key
        self._block.append(entry)
        totals = self.totals
        totals.entries += 1
        if entry.type == "file":
            totals.files += 1
            totals.bytes += entry.size
        if entry.changed_during_backup:
            totals.changed_during_backup += 1
        if len(self._block) == BLOCK_ENTRIES:
            self._flush()

    def finish(self, manifest: FilesManifest) -> None:
        """Write the last block and the tail (what could not be read, missing roots, totals from ``manifest``)."""
        self._flush()
        totals = {**self.totals.__dict__, "hashed_files": manifest.hashed_files,
                  "hashed_bytes": manifest.hashed_bytes, "reused_hashes": manifest.reused_hashes}
        tail = {"unreadable": manifest.unreadable, "missing_roots": manifest.missing_roots, "totals": totals}
        self._write(struct.pack("<I", 0) + _framed(tail))

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha256.hexdigest()

    def _write(self, data: bytes) -> None:
        self._handle.write(data)
        self._sha256.update(data)
        self.size += len(data)

    def _flush(self) -> None:
        if not self._block:
            return
        start = self.totals.entries - len(self._block)
        compressed = lzma.compress(self._columns(start), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
        self._write(struct.pack("<IQ", len(self._block), len(compressed)) + compressed + self._digests())
        self._block = []

    def _columns(self, start: int) -> bytes:
        block = self._block
        names: list[str] = []
        parents: list[int] = []
        for position, entry in enumerate(block, start):
            while self._open and not entry.path.startswith(self._open[-1][0] + "/"):
                self._open.pop()
            if self._open and entry.path.rfind("/") == len(self._open[-1][0]):
                names.append(entry.path[len(self._open[-1][0]) + 1:])
                parents.append(position - self._open[-1][1])
            else:  # its directory is not in the manifest (a root): the whole path
                names.append(entry.path)
                parents.append(0)
            if entry.type == "dir":
                self._open.append((entry.path, position))
        numeric = (
            parents,
            [_KIND_CODES[e.type] | (_CHANGED if e.changed_during_backup else 0) for e in block],
            [e.size for e in block],
            [e.mode for e in block],
            _differences([e.mtime_ns for e in block]),
            [(e.ctime_ns - e.mtime_ns) & _MASK for e in block],
            _differences([e.inode for e in block]),
        )
        parts = [_encode_names(names)]
        for values, (code, width) in zip(numeric, _NUMERIC, strict=True):
            parts.append(_shuffle(_little_endian(array.array(code, values)), width))
        return b"".join(parts)

    def _digests(self) -> bytes:
        prefix = self._algorithm + ":"
        out = bytearray()
        for entry in self._block:
            if entry.type == "dir":
                continue
            digest = entry.hash
            if digest is None or not digest.startswith(prefix) or len(digest) != len(prefix) + 2 * self._digest_size:
                raise ValueError(f"{entry.path}: digest {digest!r} is not a {self._algorithm} digest")
            out += bytes.fromhex(digest[len(prefix):])
        return bytes(out)


def to_bytes(manifest: FilesManifest) -> bytes:
    """The stored form of ``manifest``: the bytes its digest covers. The same manifest gives the same bytes.

    Raises ValueError for entries out of walk order or that the format cannot hold.
    """
    buffer = io.BytesIO()
    writer = ManifestWriter(buffer, manifest)
    for entry in manifest.entries:
        writer.add(entry)
    writer.finish(manifest)
    return buffer.getvalue()


def parse_manifest(data: bytes) -> FilesManifest:
    """Read a stored manifest back (this format, or the JSON of earlier backups), all its entries in memory.

    Raises :class:`ManifestError` when it is not one, or holds anything a comparison could be misled by: a path
    that is not absolute and normal, a name that is not one path component, a parent that is not a directory, a
    path twice or out of walk order, a field of the wrong type, a count that does not match, trailing bytes.
    """
    if data.startswith(MAGIC):
        reader = ManifestReader(io.BytesIO(data))
        entries = list(reader)
        manifest = reader.manifest()
        manifest.entries = entries
        return manifest
    if data[:1] == b"{":
        return _parse_legacy_json(data)
    raise ManifestError("not a files manifest (neither drill.manifest.files/v2 nor its JSON predecessor)")


class ManifestReader:
    """Reads a stored (v2) manifest from ``handle`` entry by entry: iterate it, then :meth:`manifest` gives the
    rest. Holds one block and the directories open on the way down.

    Raises :class:`ManifestError` (on creation, while iterating, or from :meth:`manifest`) for anything
    :func:`parse_manifest` refuses.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        if self._take(len(MAGIC), "magic line") != MAGIC:
            raise ManifestError("not a drill.manifest.files/v2 manifest")
        self._head = self._document("head")
        if self._head.get("schema") != SCHEMA:
            raise ManifestError("manifest head is not a drill.manifest.files/v2 head")
        algorithm = self._head.get("algorithm")
        if algorithm not in hashing.DIGEST_SIZES:
            raise ManifestError(f"manifest hash algorithm {str(algorithm)[:40]!r} is not one this version reads")
        self.algorithm: str = algorithm
        roots = self._head.get("roots")
        if not isinstance(roots, list) or not all(isinstance(root, str) for root in roots):
            raise ManifestError("manifest head: roots is not a list of paths")
        self.roots: list[str] = roots
        self._tail: dict[str, Any] | None = None
        self._count = 0

    def __iter__(self) -> Iterator[FileEntry]:
        if self._count or self._tail is not None:
            raise ManifestError("a manifest reader reads once")
        resolver = _Resolver()
        while count := self._number("<I", "block count"):
            columns = _decompress(self._take(self._number("<Q", "block length"), "block"), count)
            yield from _block_entries(columns, count, self._count, self.algorithm, self._take, resolver)
            self._count += count
        self._tail = self._document("tail")
        if self._handle.read(1):
            raise ManifestError("manifest has bytes after its tail")

    def manifest(self) -> FilesManifest:
        """Head and tail, without entries; only once every entry was read."""
        if self._tail is None:
            raise ManifestError("manifest tail not reached")
        manifest = _metadata({**self._head, **self._tail})
        counted = self._tail["totals"].get("entries")
        if counted != self._count:
            raise ManifestError(f"manifest tail counts {counted!r} entries, its blocks hold {self._count}")
        return manifest

    def _take(self, size: int, what: str) -> bytes:
        part = self._handle.read(size)
        if len(part) != size:
            raise ManifestError(f"manifest ends inside its {what}")
        return part

    def _number(self, fmt: str, what: str) -> int:
        value: int = struct.unpack(fmt, self._take(struct.calcsize(fmt), what))[0]
        return value

    def _document(self, what: str) -> dict[str, Any]:
        size = self._number("<I", f"{what} length")
        if size > _DOCUMENT_LIMIT:
            raise ManifestError(f"manifest {what} of {size} bytes is not read")
        try:
            document = json.loads(self._take(size, what))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {what} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ManifestError(f"manifest {what} is not a JSON object")
        return document


class StoredEntries:
    """The entries of a (v2) manifest file, read from disk each time they are iterated: a re-readable stream."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[FileEntry]:
        with open(self.path, "rb") as handle:
            yield from ManifestReader(handle)


class BaseReader:
    """A base manifest on disk, looked up by path in walk order with flat memory (a :class:`BaseCursor`).

    One that stops reading midway leaves ``failure`` set and finds nothing more: its later files are hashed
    again, never reused wrongly.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.failure: str | None = None
        self._cursor = BaseCursor(self._entries())

    def get(self, path: str, /) -> FileEntry | None:
        return self._cursor.get(path)

    def _entries(self) -> Iterator[FileEntry]:
        try:
            with open(self.path, "rb") as handle:
                yield from ManifestReader(handle)
        except ManifestError as error:
            self.failure = str(error)


def base_entries(path: str) -> BaseEntries:
    """The entries of the base manifest at ``path`` (its digest already checked), for reuse by path: streamed
    for this format, indexed in memory for the JSON of earlier versions (which is not in walk order)."""
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) == MAGIC:
            return BaseReader(path)
        handle.seek(0)
        return index_entries(parse_manifest(handle.read()).entries)


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


def _encode_names(names: list[str]) -> bytes:
    """NUL-separated names as the file system has them: one encoding for the block (UTF-8; bytes that are not
    UTF-8 round-trip as Python's surrogate escapes, as ``os.fsencode`` does, but at C speed)."""
    return "\0".join(names).encode("utf-8", "surrogateescape")


def _decode_names(data: bytes) -> list[str]:
    return data.decode("utf-8", "surrogateescape").split("\0")


def _differences(values: list[int]) -> list[int]:
    return [(value - previous) & _MASK for previous, value in zip([0, *values], values, strict=False)]


class _Resolver:
    """Turns stored names into absolute paths, holding the directories open on the way down (walk order)."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []  # (position, path)
        self._last: str | None = None

    def path(self, position: int, distance: int, text: str, kind: str) -> str:
        """Raises :class:`ManifestError` for anything that could lead a comparison elsewhere than the tree it
        restored, or a path out of walk order (so also one named twice)."""
        if distance == 0:
            path = _checked_absolute(text)
        else:
            parent = position - distance
            while self._open and self._open[-1][0] > parent:
                self._open.pop()
            if not self._open or self._open[-1][0] != parent:
                raise ManifestError(f"manifest entry {text[:200]!r}: its parent is not a directory entry above it")
            if not text or text in (".", "..") or "/" in text:
                raise ManifestError(f"manifest entry name {text[:200]!r} is not one path component")
            path = f"{self._open[-1][1]}/{text}"
        key = walk_order(path)
        if self._last is not None and key <= self._last:
            raise ManifestError(f"manifest entry {path[:200]!r} is out of order, or named twice")
        self._last = key
        if kind == "dir":
            self._open.append((position, path))
        return path


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
    columns: bytes, count: int, start: int, algorithm: str, take: Callable[[int, str], bytes], resolver: _Resolver
) -> list[FileEntry]:
    # The names end at the NUL before the numeric columns, whose size the count gives.
    numeric_size = count * _NUMERIC_WIDTH
    if len(columns) < numeric_size:
        raise ManifestError("manifest block is shorter than its entry count needs")
    names = _decode_names(columns[:len(columns) - numeric_size])
    if len(names) != count:
        raise ManifestError(f"manifest block counts {count} entries, its names column holds {len(names)}")
    parents, kinds, sizes, modes, mtime_steps, ctime_offsets, inode_steps = _numeric(
        columns, len(columns) - numeric_size, count)
    mtimes = [_signed(v & _MASK) for v in itertools.accumulate(mtime_steps)]
    inodes = [v & _MASK for v in itertools.accumulate(inode_steps)]
    digest_size = hashing.DIGEST_SIZES[algorithm]
    digests = take(digest_size * sum(1 for code in kinds if code & ~_CHANGED != 1), "digests")
    prefix = algorithm + ":"
    entries: list[FileEntry] = []
    at = 0
    for i in range(count):
        code = kinds[i]
        if (code & ~_CHANGED) >= len(_KINDS):
            raise ManifestError(f"manifest entry {start + i}: kind {code} is not a file, directory or symlink")
        kind = _KINDS[code & ~_CHANGED]
        path = resolver.path(start + i, parents[i], names[i], kind)
        digest = None
        if kind != "dir":
            digest = prefix + digests[at:at + digest_size].hex()
            at += digest_size
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
