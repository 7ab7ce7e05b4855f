"""Signed HTTP requests between an agent and the coordinator: a strict subset of RFC 9421 with Ed25519.

Every request an agent sends carries::

    Content-Digest: sha-256=:<base64 of SHA-256 of the body>:                       (RFC 9530)
    Signature-Input: drill=("@method" "@path" "content-digest");created=<unix>;nonce="<hex>";keyid="<id>";alg="ed25519"
    Signature: drill=:<base64 Ed25519 signature of the signature base>:

where the signature base (RFC 9421 section 2.5) is::

    "@method": POST
    "@path": /v1/jobs/next
    "content-digest": sha-256=:...:
    "@signature-params": ("@method" "@path" "content-digest");created=...;nonce="...";keyid="...";alg="ed25519"

The coordinator accepts a request only when the covered components are exactly these, the body has that digest,
``created`` is within :data:`WINDOW_SECONDS` of its clock, the nonce was not seen before (it remembers nonces for
the window), and the key is an enrolled, unrevoked agent's. Only the parsing and the base are here; the checks
that need state are the coordinator's.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract.errors import DrillError
from agents.contract.signing import SigningKey

LABEL = "drill"
COMPONENTS = ('"@method"', '"@path"', '"content-digest"')
WINDOW_SECONDS = 300
MAX_HEADER = 1024

_INPUT = re.compile(
    r'^drill=\("@method" "@path" "content-digest"\);created=(\d{1,12});nonce="([0-9a-f]{32,64})";'
    r'keyid="((?:sha256|sm3):[0-9a-f]{64})";alg="ed25519"$')
_SIGNATURE = re.compile(r"^drill=:([A-Za-z0-9+/]{86}==):$")
_DIGEST = re.compile(r"^sha-256=:([A-Za-z0-9+/]{43}=):$")


class RequestRefused(DrillError):
    """A request whose signature headers are missing, malformed, stale or do not verify; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def _params(created: int, nonce: str, keyid: str) -> str:
    return f'({" ".join(COMPONENTS)});created={created};nonce="{nonce}";keyid="{keyid}";alg="ed25519"'


def signature_base(method: str, path: str, digest: str, params: str) -> bytes:
    """The bytes a request signature covers (RFC 9421 section 2.5)."""
    return (f'"@method": {method.upper()}\n"@path": {path}\n"content-digest": {digest}\n'
            f'"@signature-params": {params}').encode()


def sign_request(key: SigningKey, method: str, path: str, body: bytes, *, now: float | None = None,
                 nonce: str | None = None, keyid: str | None = None) -> dict[str, str]:
    """The headers that sign a request of ``key``'s agent; ``keyid``: the id the coordinator knows it by
    (default: the key's own)."""
    digest = content_digest(body)
    params = _params(int(now if now is not None else time.time()), nonce or secrets.token_hex(16),
                     keyid or key.keyid)
    signature = key.private.sign(signature_base(method, path, digest, params))
    return {"Content-Digest": digest, "Signature-Input": f"{LABEL}={params}",
            "Signature": f"{LABEL}=:{base64.b64encode(signature).decode()}:"}


@dataclass(frozen=True)
class SignedRequest:
    """What a request's signature headers claim, parsed but not yet verified."""

    keyid: str
    created: int
    nonce: str
    params: str
    digest: str
    signature: bytes


def parse_request_signature(headers: dict[str, str], body: bytes) -> SignedRequest:
    """Parse the signature headers (names lowercase) and check the body's digest. Raises :class:`RequestRefused`."""
    raw_input, raw_signature, raw_digest = (headers.get(name, "") for name in
                                            ("signature-input", "signature", "content-digest"))
    if not raw_input or not raw_signature or not raw_digest:
        raise RequestRefused("unsigned", "the request is not signed (Signature-Input, Signature, Content-Digest)")
    if max(len(raw_input), len(raw_signature), len(raw_digest)) > MAX_HEADER:
        raise RequestRefused("malformed_signature", "a signature header is too long")
    matched = _INPUT.match(raw_input)
    signature = _SIGNATURE.match(raw_signature)
    if matched is None or signature is None or _DIGEST.match(raw_digest) is None:
        raise RequestRefused("malformed_signature", "the signature headers are not in the form drill signs with")
    if raw_digest != content_digest(body):
        raise RequestRefused("digest_mismatch", "the body is not the one the request signed")
    created, nonce, keyid = int(matched[1]), matched[2], matched[3]
    return SignedRequest(keyid, created, nonce, raw_input.removeprefix(f"{LABEL}="), raw_digest,
                         base64.b64decode(signature[1]))


def verify_request(request: SignedRequest, public: Ed25519PublicKey, method: str, path: str,
                   *, now: float | None = None) -> None:
    """Check the request's time window and signature with the agent's ``public`` key (its nonce is the caller's
    to check against those seen). Raises :class:`RequestRefused`."""
    clock = now if now is not None else time.time()
    if abs(clock - request.created) > WINDOW_SECONDS:
        raise RequestRefused("stale_request", f"the request was signed at {request.created}, more than "
                             f"{WINDOW_SECONDS}s from the coordinator's clock ({int(clock)})")
    try:
        public.verify(request.signature, signature_base(method, path, request.digest, request.params))
    except InvalidSignature:
        raise RequestRefused("bad_signature", "the request's signature does not verify") from None
