"""The agent's signing key, kept in ``state_dir/keys/`` (private key 0600, never logged)."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.contract import signing


class KeyStore:
    """The agent's key pair, created on first use if ``drill-agent init`` has not made it.

    ``digest`` names the key (``sha256:…`` or ``sm3:…``) in what it signs.
    """

    def __init__(self, state_dir: str, digest: str = signing.DEFAULT_DIGEST) -> None:
        self.path = os.path.join(state_dir, "keys")
        self.digest = digest

    def ensure(self) -> tuple[signing.SigningKey, bool]:
        """The key, and whether it was just created."""
        return signing.ensure_key(self.path, self.digest)

    @property
    def key(self) -> signing.SigningKey:
        return self.ensure()[0]

    @property
    def public_path(self) -> str:
        return signing.key_paths(self.path)[1]

    def public_pem(self) -> str:
        return signing.public_pem(self.key.public)

    def verification_keys(self) -> dict[str, Ed25519PublicKey]:
        """This agent's public key under its id in every digest: a record names it by the digest it was signed with."""
        public = self.key.public
        return {signing.key_id(public, digest): public for digest in signing.DIGESTS}
