"""Ed25519 keys and signed envelopes (DSSE) for result records.

Each agent has its own key pair in ``state_dir/keys/`` (private key 0600, never
logged); the coordinator has one too. A record is signed inside a DSSE envelope
(https://github.com/secure-systems-lab/dsse)::

    {"payloadType": "application/vnd.drill.record+json",
     "payload": base64(record JSON),
     "signatures": [{"keyid": "sha256:<hex>", "sig": base64(Ed25519 signature)}]}

The signature covers the *pre-authentication encoding* ``DSSEv1 <len(type)>
<type> <len(payload)> <payload>`` (lengths in decimal ASCII, single spaces), so
it can be checked by hand with ``openssl pkeyutl -verify -rawin``. A key's id is
the digest (SHA-256 by default, SM3 for GB/T 39786 deployments) of its raw
32-byte public key, written ``algorithm:hex``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agents.contract.errors import DrillError
from targets import hashing

RECORD_TYPE = "application/vnd.drill.record+json"
DIGESTS = ("sha256", "sm3")
DEFAULT_DIGEST = "sha256"


class SignatureError(DrillError):
    """An envelope or key is malformed, or a signature does not verify; the type says which, the message how."""

    code = "bad_signature"


class MalformedEnvelope(SignatureError):
    """Not a DSSE envelope (missing fields, bad base64, no signature), or not an Ed25519 key."""

    code = "malformed"


class UnknownKey(SignatureError):
    """Signed only by keys that are not among the trusted ones."""

    code = "unknown_key"


class BadSignature(SignatureError):
    """Signed by a trusted key, but the signature does not verify: the content was altered."""

    code = "bad_signature"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def canonical_json(document: Any) -> bytes:
    """The one byte form of a JSON document that is signed and hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey, digest: str = DEFAULT_DIGEST) -> str:
    """``algorithm:hex`` digest of the raw public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashing.digest_bytes(digest, raw)


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_pem(text: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM. Raises :class:`SignatureError`."""
    try:
        key = serialization.load_pem_public_key(text.encode() if isinstance(text, str) else text)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise MalformedEnvelope(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise MalformedEnvelope("the public key is not an Ed25519 key")
    return key


@dataclass(frozen=True)
class SigningKey:
    """A private key and its id."""

    private: Ed25519PrivateKey
    digest: str = DEFAULT_DIGEST

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def keyid(self) -> str:
        return key_id(self.public, self.digest)

    def sign(self, payload: bytes, payload_type: str = RECORD_TYPE) -> dict[str, Any]:
        """A DSSE envelope of ``payload``, signed by this key."""
        signature = self.private.sign(pae(payload_type, payload))
        return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode(),
                "signatures": [{"keyid": self.keyid, "sig": base64.b64encode(signature).decode()}]}

    def sign_document(self, document: Any, payload_type: str = RECORD_TYPE) -> dict[str, Any]:
        return self.sign(canonical_json(document), payload_type)


def generate_key(digest: str = DEFAULT_DIGEST) -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate(), digest)


KEY_FILE = "signing.key"
PUBLIC_FILE = "signing.pub"


def key_paths(directory: str) -> tuple[str, str]:
    return os.path.join(directory, KEY_FILE), os.path.join(directory, PUBLIC_FILE)


def load_key(directory: str, digest: str = DEFAULT_DIGEST) -> SigningKey | None:
    """The key pair kept in ``directory``, or None when there is none yet."""
    private_path, _ = key_paths(directory)
    try:
        with open(private_path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MalformedEnvelope(f"{private_path} does not hold a private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise MalformedEnvelope(f"{private_path} does not hold an Ed25519 private key")
    return SigningKey(key, digest)


def ensure_key(directory: str, digest: str = DEFAULT_DIGEST) -> tuple[SigningKey, bool]:
    """The key pair in ``directory``, generated (private key 0600) if missing; and whether it was new.

    Safe when several processes start at once: each writes its candidate to a file of its own and links it into
    place; only the first link succeeds, and every process then uses the key that won.
    """
    existing = load_key(directory, digest)
    if existing is not None:
        return existing, False
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = generate_key(digest)
    private_path, public_path = key_paths(directory)
    pem = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    candidate = f"{private_path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(candidate, private_path)  # fails when another process's key is already in place
        except FileExistsError:
            won = load_key(directory, digest)
            assert won is not None
            return won, False
    finally:
        os.unlink(candidate)
    public_candidate = f"{public_path}.{os.getpid()}.{secrets.token_hex(4)}"
    with open(public_candidate, "w", encoding="utf-8") as handle:
        handle.write(public_pem(key.public))
    os.replace(public_candidate, public_path)
    return key, True


@dataclass(frozen=True)
class Opened:
    """A verified envelope: who signed it and what it says."""

    keyid: str
    payload_type: str
    payload: bytes

    def document(self) -> Any:
        try:
            return json.loads(self.payload)
        except (ValueError, RecursionError) as exc:
            raise MalformedEnvelope(f"the signed payload is not JSON: {exc}") from exc


def parse_envelope(envelope: Any) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(payload type, payload, [(keyid, signature)]) of a DSSE envelope. Raises :class:`SignatureError`."""
    if not isinstance(envelope, dict):
        raise MalformedEnvelope("the envelope is not a JSON object")
    payload_type, payload, signatures = (envelope.get(k) for k in ("payloadType", "payload", "signatures"))
    if not isinstance(payload_type, str) or not isinstance(payload, str) or not isinstance(signatures, list):
        raise MalformedEnvelope("the envelope lacks payloadType, payload or signatures")
    try:
        body = base64.b64decode(payload, validate=True)
        sigs = []
        for entry in signatures:
            if not isinstance(entry, dict) or not isinstance(entry.get("keyid"), str) \
                    or not isinstance(entry.get("sig"), str):
                raise MalformedEnvelope("a signature entry lacks keyid or sig")
            sigs.append((entry["keyid"], base64.b64decode(entry["sig"], validate=True)))
    except binascii.Error as exc:
        raise MalformedEnvelope(f"the envelope holds invalid base64: {exc}") from exc
    if not sigs:
        raise MalformedEnvelope("the envelope has no signature")
    return payload_type, body, sigs


def envelope_payload(envelope: Any) -> Any:
    """The JSON document inside an envelope, *without* checking its signature (for the agent's own reading).

    Raises :class:`MalformedEnvelope`."""
    _, payload, _ = parse_envelope(envelope)
    return Opened("", "", payload).document()


def open_envelope(envelope: Any, keys: Mapping[str, Ed25519PublicKey]) -> Opened:
    """Verify ``envelope`` with one of ``keys`` (keyid → public key); return what it says.

    Raises :class:`SignatureError` naming the problem: malformed, signed by an
    unknown key, or a signature that does not verify (the content was changed).
    """
    payload_type, payload, signatures = parse_envelope(envelope)
    unknown = []
    for keyid, signature in signatures:
        public = keys.get(keyid)
        if public is None:
            unknown.append(keyid)
            continue
        try:
            public.verify(signature, pae(payload_type, payload))
        except InvalidSignature:
            raise BadSignature(f"the signature of key {keyid} does not verify: the content was altered") from None
        return Opened(keyid, payload_type, payload)
    raise UnknownKey(f"signed by an unknown key {', '.join(unknown)}")
