"""What the ledger holds, as values: its entries and its keys, and the digest that pins a key set.

Kept apart from the ledger's database so that verifying an evidence bundle
offline needs none of it (no database driver on an auditor's machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing
from agents.contract.records import Record, parse_record
from drill import merkle


@dataclass(frozen=True)
class KeyInfo:
    keyid: str
    public_pem: str
    owner: str
    role: str  # agent | coordinator

    @property
    def public(self) -> Ed25519PublicKey:
        return signing.load_public_pem(self.public_pem)


@dataclass(frozen=True)
class Entry:
    index: int
    leaf_hash: str
    record_id: str
    keyid: str
    kind: str
    host: str
    drill_id: str | None
    recorded: str
    envelope: dict[str, Any]

    @property
    def record(self) -> Record:
        """The typed record inside (its signature was checked when it was appended).

        Raises :class:`DocumentError` when the stored envelope no longer holds a valid record.
        """
        return parse_record(signing.envelope_payload(self.envelope))


def leaf_hash_of(algorithm: str, envelope: Any) -> str:
    """The leaf hash (``algorithm:hex``) of an entry holding ``envelope``: H(0x00 || canonical JSON of it)."""
    return merkle.to_text(algorithm, merkle.leaf_hash(algorithm, signing.canonical_json(envelope)))


def keys_digest(algorithm: str, keys: Sequence[KeyInfo]) -> str:
    """A digest over every key (id, owner, role, PEM) in id order: a checkpoint pins the key set."""
    listing = [{"keyid": k.keyid, "owner": k.owner, "role": k.role, "public_pem": k.public_pem}
               for k in sorted(keys, key=lambda k: k.keyid)]
    return merkle.to_text(algorithm, merkle.leaf_hash(algorithm, signing.canonical_json(listing)))
