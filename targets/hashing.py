"""Content hash algorithms for manifests: BLAKE3 (default), SHA-256 and SM3.

Digests are written ``algorithm:hex`` everywhere so that a reader never has to
guess which algorithm produced a value.
"""

from __future__ import annotations

import hashlib
from typing import IO, Protocol

import blake3
from cryptography.hazmat.primitives import hashes

ALGORITHMS = ("blake3", "sha256", "sm3")
DEFAULT_ALGORITHM = "blake3"
# Bytes of a raw digest, by algorithm: manifests store digests raw.
DIGEST_SIZES = {"blake3": 32, "sha256": 32, "sm3": 32}


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...


class _Sm3:
    """SM3 (GB/T 32905) from ``cryptography``, with the hashlib method names."""

    def __init__(self) -> None:
        self._hash = hashes.Hash(hashes.SM3())

    def update(self, data: bytes | memoryview, /) -> None:
        self._hash.update(bytes(data))

    def hexdigest(self) -> str:
        return self._hash.finalize().hex()


class UnknownAlgorithm(ValueError):
    """A hash algorithm this project does not offer."""


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for ``algorithm`` (one of :data:`ALGORITHMS`)."""
    if algorithm == "blake3":
        return blake3.blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "sm3":
        return _Sm3()
    raise UnknownAlgorithm(f"unknown hash algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def finish(algorithm: str, hasher: Hasher) -> str:
    """The ``algorithm:hex`` digest of a hasher made by :func:`new_hasher`."""
    return f"{algorithm}:{hasher.hexdigest()}"  # type: ignore[attr-defined]


def digest_bytes(algorithm: str, data: bytes) -> str:
    """The ``algorithm:hex`` digest of ``data``."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return finish(algorithm, hasher)


def digest_file(algorithm: str, handle: IO[bytes]) -> str:
    """The ``algorithm:hex`` digest of what is left to read from ``handle``, read in chunks."""
    hasher = new_hasher(algorithm)
    while chunk := handle.read(1 << 20):
        hasher.update(chunk)
    return finish(algorithm, hasher)
