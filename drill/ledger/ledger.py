"""The ledger: signed records appended in order, a Merkle tree over them, signed checkpoints.

Given a store and the coordinator's key. :meth:`Ledger.append` takes a DSSE
envelope and either appends it (returning its :class:`Entry`) or refuses it with
a :class:`Refused` naming why: malformed, signed by an unknown key, a signature
that does not verify, or a record already present in another form (a replay).
The very same envelope offered twice is :class:`AlreadyPresent` -- harmless,
which is what makes an interrupted ingest safe to run again.

Every read checks: opening a ledger compares its stored leaf hashes with the
newest signed checkpoint, and reading an entry compares its content with its
leaf hash, so a ledger whose entries were deleted or rewritten raises
:class:`LedgerTampered` instead of serving them. :meth:`Ledger.audit` re-checks
everything and names each problem; given the checkpoint log kept outside the
database (``checkpoint_log``), it also checks every checkpoint in that log, which
catches a database rewritten wholesale (entries and checkpoints alike).
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing
from agents.contract.documents import DocumentError, to_json_document
from agents.contract.errors import DrillError
from agents.contract.records import DrillRecord, Record, parse_record
from drill import merkle
from drill.ledger.entries import Entry, KeyInfo, keys_digest, leaf_hash_of
from drill.ledger.store import Store

__all__ = ["AlreadyPresent", "AuditProblem", "CheckpointLog", "CheckpointLogError", "Entry", "KeyInfo", "Ledger",
           "LedgerTampered", "Refused", "append_checkpoint_log", "keys_digest", "read_checkpoint_log"]

CHECKPOINT_TYPE = "application/vnd.drill.checkpoint+json"
CHECKPOINT_SCHEMA = "drill.checkpoint/v1"
MAX_LOG_LINE = 1 << 20  # bytes of one line of a checkpoint log (an envelope is under 1 KiB)
MAX_LOG_LINES = 1_000_000
_AUDIT_HINT = "drillctl ledger audit names every problem"


class Refused(DrillError):
    """An envelope the ledger will not take; ``code`` (from the type of the problem) for scripts."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AlreadyPresent(DrillError):
    """This exact envelope is already in the ledger (at ``index``)."""

    code = "already_present"

    def __init__(self, index: int) -> None:
        super().__init__(f"already in the ledger at index {index}")
        self.index = index


class LedgerTampered(DrillError):
    """The stored entries disagree with what the coordinator signed (deleted, rewritten); the message says how."""

    code = "ledger_tampered"


class CheckpointLogError(DrillError):
    """The checkpoint log cannot be appended to or read; the message names the file and why."""

    code = "checkpoint_log"


@dataclass(frozen=True)
class AuditProblem:
    """One problem :meth:`Ledger.audit` found: a stable ``code`` for scripts and a message for people.

    Codes: ``entry_missing``, ``entry_altered``, ``bad_signature``, ``truncated``,
    ``rewritten``, ``checkpoint_invalid``, ``checkpoint_inconsistent``,
    ``log_malformed``, ``log_too_long``.
    """

    code: str
    message: str


@dataclass(frozen=True)
class CheckpointLog:
    """What a checkpoint log holds: (line number, envelope) of each line, and the lines that could not be read."""

    path: str
    checkpoints: tuple[tuple[int, Any], ...]
    problems: tuple[AuditProblem, ...]


@dataclass(frozen=True)
class _Head:
    """A checkpoint whose signature verified: the tree it signed, and its name in messages."""

    name: str
    size: int
    root: bytes


class _InvalidCheckpoint(Exception):
    """Why a checkpoint cannot be used (internal: becomes a ``checkpoint_invalid`` problem)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _open_checkpoint(envelope: Any, coordinator: signing.SigningKey, algorithm: str, where: str = "") -> _Head:
    """The tree a checkpoint envelope signed, named ``the checkpoint of ISSUED`` + ``where``.

    Raises :class:`_InvalidCheckpoint` when it is not signed by ``coordinator``
    or is not a ``drill.checkpoint/v1`` of this ledger's algorithm.
    """
    try:
        opened = signing.open_envelope(envelope, {coordinator.keyid: coordinator.public})
        body = opened.document()
    except signing.UnknownKey as error:
        raise _InvalidCheckpoint(f"{error}, not by the coordinator's key {coordinator.keyid}: "
                                 "it was replaced or re-signed") from None
    except signing.SignatureError as error:
        raise _InvalidCheckpoint(str(error)) from None
    if opened.payload_type != CHECKPOINT_TYPE or not isinstance(body, dict) or body.get("schema") != CHECKPOINT_SCHEMA:
        raise _InvalidCheckpoint(f"it is not a {CHECKPOINT_SCHEMA} signed as {CHECKPOINT_TYPE}")
    size, root, issued = body.get("tree_size"), body.get("root"), body.get("issued")
    if type(size) is not int or size < 0 or not isinstance(issued, str):
        raise _InvalidCheckpoint("it lacks a tree size or a time")
    try:
        root_algorithm, root_bytes = merkle.from_text(str(root))
    except ValueError as error:
        raise _InvalidCheckpoint(str(error)) from None
    if root_algorithm != algorithm or body.get("algorithm") != algorithm:
        raise _InvalidCheckpoint(f"it hashes with {body.get('algorithm')}, this ledger with {algorithm}")
    return _Head(f"the checkpoint of {issued}{where}", size, root_bytes)


def _check_heads(heads: Sequence[_Head], tree: merkle.Tree, entries: int) -> list[AuditProblem]:
    """Check signed checkpoints against a ledger of ``entries`` entries whose first leaves are ``tree``'s.

    None may cover more entries than there are; each one's root must be the root
    of its prefix; each two of consecutive size must be consistent (RFC 9162
    consistency proof from the leaves, verified against both signed roots).
    """
    problems = []
    beyond = [head for head in heads if head.size > entries]
    if beyond:
        newest = max(beyond, key=lambda head: head.size)
        problems.append(AuditProblem("truncated", f"the ledger holds {entries} entries, but {newest.name} signed "
                                     f"{newest.size}: entries were deleted"))
    within = sorted((head for head in heads if head.size <= entries), key=lambda head: head.size)
    for head in within:
        if head.size > len(tree.leaves) or tree.root(head.size) != head.root:
            problems.append(AuditProblem("rewritten", f"the first {head.size} entries no longer hash to the root "
                                         f"{head.name} signed: entries were rewritten or removed"))
    for old, new in itertools.pairwise(within):
        if new.size > len(tree.leaves):
            continue  # named above; there are no leaves to prove anything with
        proof = tree.consistency_proof(old.size, new.size)
        if not merkle.verify_consistency(tree.algorithm, old.size, new.size, old.root, new.root, proof):
            problems.append(AuditProblem("checkpoint_inconsistent", f"the entries held prove no consistency from "
                                         f"{old.name} (size {old.size}) to {new.name} (size {new.size}): the "
                                         f"first {new.size} entries are not the ones both signed"))
    return problems


class Ledger:
    """The ledger in ``store``, kept by ``coordinator`` (its key signs checkpoints and the coordinator's records).

    ``checkpoint_log``: a file outside the database every checkpoint is also
    appended to. ``verify`` (default): check the stored leaf hashes against the
    newest signed checkpoint now, raising :class:`LedgerTampered` when they
    disagree; only the audit, which names every problem itself, opens without.
    Raises :class:`Refused` (``digest_mismatch``) for a ledger of another hash.
    """

    def __init__(self, store: Store, coordinator: signing.SigningKey, owner: str = "coordinator", *,
                 checkpoint_log: str | None = None, verify: bool = True) -> None:
        self.store = store
        self.coordinator = coordinator
        self.algorithm = coordinator.digest
        self.checkpoint_log = checkpoint_log
        existing = self.store.query("SELECT value FROM ledger_meta WHERE name = %s", ("digest",))
        if not existing:  # a new ledger; another coordinator process may be opening it this very moment
            self.store.execute("INSERT INTO ledger_meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                               ("digest", self.algorithm))
            existing = self.store.query("SELECT value FROM ledger_meta WHERE name = %s", ("digest",))
        if existing[0][0] != self.algorithm:
            raise Refused("digest_mismatch", f"this ledger hashes with {existing[0][0]}, not {self.algorithm}")
        if verify:
            self.check_newest_checkpoint()
        self.add_key(signing.public_pem(coordinator.public), owner, "coordinator")

    def check_newest_checkpoint(self) -> None:
        """Compare the stored leaf hashes with the newest signed checkpoint. Raises :class:`LedgerTampered`.

        Cheap enough for every opening: one signature and one root over the
        stored leaf hashes; no entry's envelope is re-hashed (reading an entry
        checks that one, and :meth:`audit` all of them).
        """
        heads, problems = self._stored_heads(newest_only=True)
        if not problems and heads:
            problems = _check_heads(heads, merkle.Tree(self.algorithm, self._leaves(heads[0].size)), self.size())
        if problems:
            raise LedgerTampered(f"the ledger is not what its coordinator signed: {problems[0].message} "
                                 f"({_AUDIT_HINT})")

    def _stored_heads(self, newest_only: bool = False) -> tuple[list[_Head], list[AuditProblem]]:
        """The checkpoints stored in the database that verify, and a problem for each that does not."""
        sql = "SELECT tree_size, root, issued, envelope FROM ledger_checkpoints ORDER BY tree_size"
        rows = self.store.query(sql + " DESC LIMIT 1" if newest_only else sql)
        heads, problems = [], []
        for size, root, issued, text in rows:
            label = f"the stored checkpoint of {issued} (size {size})"
            try:
                head = _open_checkpoint(json.loads(text), self.coordinator, self.algorithm)
            except (ValueError, RecursionError):
                problems.append(AuditProblem("checkpoint_invalid", f"{label}: its envelope is not JSON"))
                continue
            except _InvalidCheckpoint as error:
                problems.append(AuditProblem("checkpoint_invalid", f"{label}: {error}"))
                continue
            if head.size != int(size) or merkle.to_text(self.algorithm, head.root) != root:
                problems.append(AuditProblem("checkpoint_invalid", f"{label}: its row says size {size}, root {root}, "
                                             f"but {head.name} signed size {head.size}, root "
                                             f"{merkle.to_text(self.algorithm, head.root)}: the row was edited"))
            heads.append(head)
        return heads, problems

    # -- keys ------------------------------------------------------------------------
    def add_key(self, public_pem: str, owner: str, role: str) -> str:
        """Enrol a public key (idempotent); return its id. Raises :class:`signing.SignatureError` for a bad PEM."""
        keyid = signing.key_id(signing.load_public_pem(public_pem), self.algorithm)
        # One statement, not look-then-insert: two ingests enrolling the same agent at once must both succeed.
        self.store.execute("INSERT INTO ledger_keys (keyid, public_pem, owner, role, added) "
                           "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (keyid) DO NOTHING",
                           (keyid, public_pem, owner, role, _now()))
        return keyid

    def keys(self) -> dict[str, KeyInfo]:
        rows = self.store.query("SELECT keyid, public_pem, owner, role FROM ledger_keys ORDER BY keyid")
        return {str(r[0]): KeyInfo(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}

    def verification_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every enrolled key under its id in each digest (an agent may name its key by SM3, the ledger by SHA-256)."""
        found = {}
        for info in self.keys().values():
            public = info.public
            for digest in signing.DIGESTS:
                found[signing.key_id(public, digest)] = public
        return found

    # -- entries ---------------------------------------------------------------------
    def append(self, envelope: Any, keys: Mapping[str, Ed25519PublicKey] | None = None) -> Entry:
        """Check and append one signed record. Raises :class:`Refused` or :class:`AlreadyPresent`.

        ``keys``: the only keys the record may be signed by (the fleet passes the key of the agent that sent
        it); default: every enrolled key.
        """
        [result] = self.append_many([envelope], keys)
        if isinstance(result, Entry):
            return result
        raise result

    def append_many(self, envelopes: Sequence[Any], keys: Mapping[str, Ed25519PublicKey] | None = None,
                    ) -> list[Entry | Refused | AlreadyPresent]:
        """Check and append signed records, in order, in one write: for each its entry, or why it was not taken
        (:class:`Refused`, :class:`AlreadyPresent`). Signatures are checked before the ledger is locked, so a
        batch holds the lock only for its inserts -- and pays one commit, not one per record."""
        keys = self.verification_keys() if keys is None else keys
        opened: list[tuple[Any, str, str, Record] | Refused] = []
        for envelope in envelopes:
            try:
                signed = signing.open_envelope(envelope, keys)
                record = parse_record(signed.document())
            except signing.SignatureError as error:
                opened.append(Refused(error.code, str(error)))
                continue
            except DocumentError as error:
                opened.append(Refused("malformed", str(error)))
                continue
            leaf = merkle.to_text(self.algorithm, merkle.leaf_hash(self.algorithm, signing.canonical_json(envelope)))
            opened.append((envelope, leaf, signed.keyid, record))
        results: list[Entry | Refused | AlreadyPresent] = []
        with self.store.writing():
            index = int(self.store.query("SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger_entries")[0][0])
            for item in opened:
                if isinstance(item, Refused):
                    results.append(item)
                    continue
                envelope, leaf, keyid, record = item
                same = self.store.query(
                    "SELECT idx, leaf_hash FROM ledger_entries WHERE record_id = %s OR leaf_hash = %s",
                    (record.record_id, leaf))
                if same:
                    results.append(AlreadyPresent(int(same[0][0])) if same[0][1] == leaf else Refused(
                        "replay", f"record {record.record_id} is already in the ledger at index {same[0][0]} with "
                        "other content: a replayed or re-signed record"))
                    continue
                entry = Entry(index, leaf, record.record_id, keyid, record.kind, record.host, record.drill_id,
                              _now(), envelope)
                self.store.execute(
                    "INSERT INTO ledger_entries (idx, leaf_hash, record_id, keyid, kind, host, drill_id, recorded, "
                    "envelope) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (entry.index, entry.leaf_hash, entry.record_id, entry.keyid, entry.kind, entry.host,
                     entry.drill_id, entry.recorded, json.dumps(envelope, sort_keys=True)))
                results.append(entry)
                index += 1
        return results

    def append_signed(self, record: DrillRecord) -> Entry:
        """Sign ``record`` with the coordinator's key and append it."""
        return self.append(self.coordinator.sign_document(to_json_document(record)))

    def _entries(self, where: str = "", params: Sequence[Any] = ()) -> list[Entry]:
        """The entries ``where`` says, each with its leaf hash recomputed from its envelope.

        Raises :class:`LedgerTampered` when an envelope no longer matches the leaf
        hash it was appended with: a rewritten entry is never served.
        """
        # ``where`` is one of this module's constant clauses; values go in ``params``.
        sql = ("SELECT idx, leaf_hash, record_id, keyid, kind, host, drill_id, recorded, envelope "  # noqa: S608
               f"FROM ledger_entries {where} ORDER BY idx")
        entries = []
        for r in self.store.query(sql, params):
            try:
                envelope = json.loads(r[8])
                leaf = leaf_hash_of(self.algorithm, envelope)
            except (ValueError, RecursionError):
                leaf, envelope = "", None
            if leaf != str(r[1]) or not isinstance(envelope, dict):
                raise LedgerTampered(f"entry {r[0]} was rewritten: its content no longer matches its leaf hash "
                                     f"({_AUDIT_HINT})")
            entries.append(Entry(int(r[0]), leaf, str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                                 None if r[6] is None else str(r[6]), str(r[7]), envelope))
        return entries

    def entries(self) -> list[Entry]:
        return self._entries()

    def entries_of_drill(self, drill_id: str) -> list[Entry]:
        return self._entries("WHERE drill_id = %s", (drill_id,))

    def entry_at(self, index: int) -> Entry | None:
        found = self._entries("WHERE idx = %s", (index,))
        return found[0] if found else None

    def find(self, record_id: str) -> Entry | None:
        """The entry of record ``record_id``, or None when the ledger does not have it."""
        found = self._entries("WHERE record_id = %s", (record_id,))
        return found[0] if found else None

    def size(self) -> int:
        return int(self.store.query("SELECT COUNT(*) FROM ledger_entries")[0][0])

    # -- the tree --------------------------------------------------------------------
    def _leaves(self, size: int) -> list[bytes]:
        """The stored leaf hashes of the entries below ``size``. Raises :class:`LedgerTampered` for one unreadable."""
        rows = self.store.query("SELECT idx, leaf_hash FROM ledger_entries WHERE idx < %s ORDER BY idx", (size,))
        leaves = []
        for index, text in rows:
            try:
                algorithm, leaf = merkle.from_text(str(text))
            except ValueError:
                algorithm, leaf = "", b""
            if algorithm != self.algorithm:
                raise LedgerTampered(f"entry {index} was rewritten: its leaf hash is not a {self.algorithm} hash "
                                     f"({_AUDIT_HINT})")
            leaves.append(leaf)
        return leaves

    def checkpoint(self) -> dict[str, Any]:
        """Sign and store a checkpoint of the tree as it is now; return its envelope.

        With a ``checkpoint_log``, the envelope is appended to it first; raises
        :class:`CheckpointLogError` (and stores nothing) when that fails.
        """
        size = self.size()
        head = merkle.to_text(self.algorithm, merkle.root(self.algorithm, self._leaves(size)))
        body = {"schema": CHECKPOINT_SCHEMA, "tree_size": size, "root": head, "issued": _now(),
                "algorithm": self.algorithm, "keys_digest": keys_digest(self.algorithm, list(self.keys().values()))}
        envelope = self.coordinator.sign_document(body, CHECKPOINT_TYPE)
        if self.checkpoint_log is not None:
            append_checkpoint_log(self.checkpoint_log, envelope)
        with self.store.writing():
            if not self.store.query("SELECT 1 FROM ledger_checkpoints WHERE tree_size = %s", (size,)):
                self.store.execute("INSERT INTO ledger_checkpoints (tree_size, root, issued, envelope) "
                                   "VALUES (%s, %s, %s, %s)", (size, head, body["issued"], json.dumps(envelope)))
        return envelope

    def inclusion_proof(self, index: int, size: int) -> list[str]:
        leaves = self._leaves(size)
        return [merkle.to_text(self.algorithm, h) for h in merkle.inclusion_proof(self.algorithm, index, leaves)]

    def audit(self, against: CheckpointLog | None = None) -> list[AuditProblem]:
        """Re-check the whole ledger; the problems found (none: intact). Never raises for what it finds.

        Every entry: present in order, content matching its leaf hash, signature.
        Every stored checkpoint: signed by the coordinator, within the entries,
        its root that of its prefix, consistent with the next. With ``against``
        (a checkpoint log read by :func:`read_checkpoint_log`), every checkpoint
        in it too, so a database rewritten together with its checkpoints is caught.
        """
        problems = []
        keys = self.verification_keys()
        leaves = []
        expected = 0
        for raw_index, stored_leaf, text in self.store.query(
                "SELECT idx, leaf_hash, envelope FROM ledger_entries ORDER BY idx"):
            index = int(raw_index)
            if index > expected:
                missing = f"entry {expected} is" if index == expected + 1 else f"entries {expected} to {index - 1} are"
                problems.append(AuditProblem("entry_missing", f"{missing} missing"))
            expected = index + 1
            try:
                envelope = json.loads(text)
            except (ValueError, RecursionError):
                problems.append(AuditProblem("entry_altered", f"entry {index}: its stored envelope is not JSON"))
                leaves.append(merkle.leaf_hash(self.algorithm, str(text).encode()))
                continue
            leaf = merkle.leaf_hash(self.algorithm, signing.canonical_json(envelope))
            leaves.append(leaf)
            if merkle.to_text(self.algorithm, leaf) != stored_leaf:
                problems.append(AuditProblem("entry_altered",
                                             f"entry {index}: its content no longer matches its leaf hash"))
            try:
                signing.open_envelope(envelope, keys)
            except signing.SignatureError as error:
                problems.append(AuditProblem("bad_signature", f"entry {index}: {error}"))
        tree = merkle.Tree(self.algorithm, leaves)
        heads, found = self._stored_heads()
        problems += found + _check_heads(heads, tree, len(leaves))
        if against is not None:
            logged = []
            for number, envelope in against.checkpoints:
                where = f" ({against.path} line {number})"
                try:
                    logged.append(_open_checkpoint(envelope, self.coordinator, self.algorithm, where))
                except _InvalidCheckpoint as error:
                    problems.append(AuditProblem("checkpoint_invalid", f"the checkpoint{where}: {error}"))
            problems += [*against.problems, *_check_heads(logged, tree, len(leaves))]
        return problems


def append_checkpoint_log(path: str, envelope: Any) -> None:
    """Append ``envelope`` to the checkpoint log at ``path`` as one JSON line, durably.

    Opened with O_APPEND (the only write the coordinator needs, so the file can
    be made append-only for it) and O_CREAT (mode 0600), and fsync'd -- the
    directory too when the file is new. Raises :class:`CheckpointLogError`.
    """
    line = signing.canonical_json(envelope) + b"\n"
    try:
        created = not os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except OSError as error:
        raise CheckpointLogError(f"cannot append the checkpoint to the checkpoint log {path}: "
                                 f"{error.strerror or error}") from error


def read_checkpoint_log(path: str) -> CheckpointLog:
    """The checkpoints in the log at ``path``, read with bounds: lines of at most 1 MiB, at most 1e6 lines.

    A line that is not JSON, or too long, is a ``log_malformed`` problem (the
    rest is still read); more lines than the bound, ``log_too_long`` (the rest is
    not). Blank lines are skipped. Raises :class:`CheckpointLogError` when the
    file cannot be opened or is not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise CheckpointLogError(f"cannot read the checkpoint log {path}: {error.strerror or error}") from error
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointLogError(f"the checkpoint log {path} is not a regular file")
    checkpoints: list[tuple[int, Any]] = []
    problems: list[AuditProblem] = []
    with os.fdopen(fd, "rb") as handle:
        number = 0
        while line := handle.readline(MAX_LOG_LINE + 1):
            number += 1
            if number > MAX_LOG_LINES:
                problems.append(AuditProblem("log_too_long", f"{path} has more than {MAX_LOG_LINES} lines: the "
                                             "rest was not checked"))
                break
            if len(line) > MAX_LOG_LINE and not line.endswith(b"\n"):
                problems.append(AuditProblem("log_malformed", f"{path} line {number} is longer than "
                                             f"{MAX_LOG_LINE} bytes"))
                while (rest := handle.readline(MAX_LOG_LINE)) and not rest.endswith(b"\n"):
                    pass  # the rest of that line, never held whole
                continue
            if not line.strip():
                continue
            try:
                envelope = json.loads(line)
            except (ValueError, RecursionError) as error:
                detail = str(error)[:120] if isinstance(error, ValueError) else "nested too deeply"
                problems.append(AuditProblem("log_malformed", f"{path} line {number} is not JSON: {detail}"))
                continue
            if isinstance(envelope, dict):
                checkpoints.append((number, envelope))
            else:
                problems.append(AuditProblem("log_malformed", f"{path} line {number} is not a JSON envelope"))
    return CheckpointLog(path, tuple(checkpoints), tuple(problems))
