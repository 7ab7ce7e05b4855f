"""Local accounts of the web view: a name, a role and a password hashed with scrypt (memory-hard).

Roles: ``operator`` (every page and action) and ``auditor`` (every page, read-only;
may download reports and evidence bundles). The table ``web_accounts`` sits beside
the fleet's in the ledger's database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from agents.contract.errors import InputError
from drill.ledger.store import Store

ROLES = ("operator", "auditor")
# scrypt with N=2^15, r=8: 32 MiB of memory per guess (hashlib's cap is raised to fit).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSWORD = 12
TABLE = ("CREATE TABLE IF NOT EXISTS web_accounts (name TEXT PRIMARY KEY, role TEXT NOT NULL, "
         "password_hash TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)")
# Checked against when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY: dict[str, str] = {}


@dataclass(frozen=True)
class Account:
    name: str
    role: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
                            maxmem=64 * 1024 * 1024)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                  dklen=32, maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def create_table(store: Store) -> None:
    store.execute(TABLE)


def add_account(store: Store, name: str, role: str, password: str, now: float) -> None:
    """Create or replace the account ``name``. Raises ``InputError`` for a bad name, role or short password."""
    if role not in ROLES:
        raise InputError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise InputError(f"account name {name[:64]!r}: letters, digits, '.', '_' and '-', at most 64")
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password is shorter than {MIN_PASSWORD} characters")
    create_table(store)
    with store.transaction():
        store.execute("DELETE FROM web_accounts WHERE name = %s", (name,))
        store.execute("INSERT INTO web_accounts (name, role, password_hash, created) VALUES (%s, %s, %s, %s)",
                      (name, role, hash_password(password), now))


def list_accounts(store: Store) -> list[Account]:
    create_table(store)
    return [Account(str(n), str(r)) for n, r in store.query("SELECT name, role FROM web_accounts ORDER BY name")]


def authenticate(store: Store, name: str, password: str) -> Account | None:
    """The account when ``password`` is its password, else None (in about the same time either way)."""
    rows = store.query("SELECT role, password_hash FROM web_accounts WHERE name = %s", (name[:64],))
    if not rows:
        if "hash" not in _DUMMY:
            _DUMMY["hash"] = hash_password("not a password of anyone")
        password_matches(password, _DUMMY["hash"])
        return None
    role, stored = rows[0]
    return Account(name, str(role)) if password_matches(password, str(stored)) else None
