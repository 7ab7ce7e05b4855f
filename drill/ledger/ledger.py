"""The ledger: signed records appended in order, a Merkle tree over them, signed checkpoints.

Given a store and the coordinator's key. :meth:`Ledger.append` takes a DSSE
envelope and either appends it (returning its :class:`Entry`) or refuses it with
a :class:`Refused` naming why: malformed, signed by an unknown key, a signature
that does not verify, or a record already present in another form (a replay).
The very same envelope offered twice is :class:`AlreadyPresent` -- harmless,
which is what makes an interrupted ingest safe to run again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing
from agents.contract.documents import DocumentError, to_json_document
from agents.contract.errors import DrillError
from agents.contract.records import DrillRecord, parse_record
from drill import merkle
from drill.ledger.entries import Entry, KeyInfo, keys_digest
from drill.ledger.store import Store

__all__ = ["AlreadyPresent", "Entry", "KeyInfo", "Ledger", "Refused", "keys_digest"]

CHECKPOINT_TYPE = "application/vnd.drill.checkpoint+json"


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Ledger:
    def __init__(self, store: Store, coordinator: signing.SigningKey, owner: str = "coordinator") -> None:
        self.store = store
        self.coordinator = coordinator
        self.algorithm = coordinator.digest
        existing = self.store.query("SELECT value FROM ledger_meta WHERE name = %s", ("digest",))
        if existing and existing[0][0] != self.algorithm:
            raise Refused("digest_mismatch", f"this ledger hashes with {existing[0][0]}, not {self.algorithm}")
        if not existing:
            self.store.execute("INSERT INTO ledger_meta (name, value) VALUES (%s, %s)", ("digest", self.algorithm))
        self.add_key(signing.public_pem(coordinator.public), owner, "coordinator")

    # -- keys ------------------------------------------------------------------------
    def add_key(self, public_pem: str, owner: str, role: str) -> str:
        """Enrol a public key (idempotent); return its id. Raises :class:`signing.SignatureError` for a bad PEM."""
        keyid = signing.key_id(signing.load_public_pem(public_pem), self.algorithm)
        if not self.store.query("SELECT 1 FROM ledger_keys WHERE keyid = %s", (keyid,)):
            self.store.execute("INSERT INTO ledger_keys (keyid, public_pem, owner, role, added) "
                               "VALUES (%s, %s, %s, %s, %s)", (keyid, public_pem, owner, role, _now()))
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
    def append(self, envelope: Any) -> Entry:
        """Check and append one signed record. Raises :class:`Refused` or :class:`AlreadyPresent`."""
        try:
            opened = signing.open_envelope(envelope, self.verification_keys())
            record = parse_record(opened.document())
        except signing.SignatureError as error:
            raise Refused(error.code, str(error)) from error
        except DocumentError as error:
            raise Refused("malformed", str(error)) from error
        data = signing.canonical_json(envelope)
        leaf = merkle.to_text(self.algorithm, merkle.leaf_hash(self.algorithm, data))
        with self.store.writing():
            same = self.store.query("SELECT idx, leaf_hash FROM ledger_entries WHERE record_id = %s OR leaf_hash = %s",
                                    (record.record_id, leaf))
            if same:
                if same[0][1] == leaf:
                    raise AlreadyPresent(int(same[0][0]))
                raise Refused("replay", f"record {record.record_id} is already in the ledger at index "
                              f"{same[0][0]} with other content: a replayed or re-signed record")
            index = int(self.store.query("SELECT COUNT(*) FROM ledger_entries")[0][0])
            entry = Entry(index, leaf, record.record_id, opened.keyid, record.kind, record.host, record.drill_id,
                          _now(), envelope)
            self.store.execute(
                "INSERT INTO ledger_entries (idx, leaf_hash, record_id, keyid, kind, host, drill_id, recorded, "
                "envelope) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (entry.index, entry.leaf_hash, entry.record_id, entry.keyid, entry.kind, entry.host, entry.drill_id,
                 entry.recorded, json.dumps(envelope, sort_keys=True)))
        return entry

    def append_signed(self, record: DrillRecord) -> Entry:
        """Sign ``record`` with the coordinator's key and append it."""
        return self.append(self.coordinator.sign_document(to_json_document(record)))

    def _entries(self, where: str = "", params: Sequence[Any] = ()) -> list[Entry]:
        # ``where`` is one of this module's constant clauses; values go in ``params``.
        sql = ("SELECT idx, leaf_hash, record_id, keyid, kind, host, drill_id, recorded, envelope "  # noqa: S608
               f"FROM ledger_entries {where} ORDER BY idx")
        rows = self.store.query(sql, params)
        return [Entry(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                      None if r[6] is None else str(r[6]), str(r[7]), json.loads(r[8])) for r in rows]

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
        rows = self.store.query("SELECT leaf_hash FROM ledger_entries WHERE idx < %s ORDER BY idx", (size,))
        return [merkle.from_text(str(r[0]))[1] for r in rows]

    def checkpoint(self) -> dict[str, Any]:
        """Sign and store a checkpoint of the tree as it is now; return its envelope."""
        size = self.size()
        head = merkle.to_text(self.algorithm, merkle.root(self.algorithm, self._leaves(size)))
        body = {"schema": "drill.checkpoint/v1", "tree_size": size, "root": head, "issued": _now(),
                "algorithm": self.algorithm, "keys_digest": keys_digest(self.algorithm, list(self.keys().values()))}
        envelope = self.coordinator.sign_document(body, CHECKPOINT_TYPE)
        with self.store.writing():
            if not self.store.query("SELECT 1 FROM ledger_checkpoints WHERE tree_size = %s", (size,)):
                self.store.execute("INSERT INTO ledger_checkpoints (tree_size, root, issued, envelope) "
                                   "VALUES (%s, %s, %s, %s)", (size, head, body["issued"], json.dumps(envelope)))
        return envelope

    def inclusion_proof(self, index: int, size: int) -> list[str]:
        leaves = self._leaves(size)
        return [merkle.to_text(self.algorithm, h) for h in merkle.inclusion_proof(self.algorithm, index, leaves)]

    def audit(self) -> list[str]:
        """Re-check every stored entry (signature, leaf hash, order); the problems found (none: intact)."""
        problems = []
        keys = self.verification_keys()
        for position, entry in enumerate(self._entries()):
            if entry.index != position:
                problems.append(f"entry {entry.index} is at position {position}: an entry is missing")
            data = signing.canonical_json(entry.envelope)
            if merkle.to_text(self.algorithm, merkle.leaf_hash(self.algorithm, data)) != entry.leaf_hash:
                problems.append(f"entry {entry.index}: its content no longer matches its leaf hash")
            try:
                signing.open_envelope(entry.envelope, keys)
            except signing.SignatureError as error:
                problems.append(f"entry {entry.index}: {error}")
        return problems
