"""The agent's own key to a repository: a restic key file whose password is 256 random bits.

Every restic command starts by deriving the repository's key from its password
with scrypt, at the cost restic calibrated when the key was made: about half a
second of CPU on this kind of machine, before it reads anything. A backup runs
two or three restic commands, a verification four; on two cores that half
second each is most of what drill costs beyond a raw restic run.

The stretching is there to protect a password a person chose. A password of
256 random bits needs none: no search over it is possible at any cost per try.
So the agent adds a key of its own to each repository it uses -- the
repository's master key sealed again, in restic's key-file format, with such a
password and scrypt parameters that cost about a millisecond -- and runs restic
with that password and ``RESTIC_KEY_HINT`` naming the key (without the hint,
restic would try the costly key first). The operator's password and key are
unchanged; ``restic key list`` shows the agent's key (user ``drill-agent``, the
agent's host), and ``restic key remove`` revokes it: the agent makes a new one
at its next job. Its password lives in the state directory (mode 0600), beside
the agent's signing key, and is never on argv or in a log.

Repositories on a local file system and on S3 (with an access key in the
repository's env file) get one: the agent writes the key file itself
(:mod:`agents.restic.keyfolders`). Any other backend, a repository opened with
a password command, ``restic.agent_keys: false``, or a repository where
anything goes wrong (the key folder unreachable or read-only, no key the
configured password opens) is opened with the configured password as before --
a slower job, never a failed one. Making the key costs one scrypt with the
repository's own parameters, once.

restic's formats (``doc/design.rst``, "Keys, Encryption and MAC"): a key file
is JSON naming the KDF and its parameters, a 64-byte salt, and ``data``: the
master key's JSON sealed with the derived user key -- IV (16 bytes), AES-256-CTR
ciphertext, Poly1305-AES MAC of the ciphertext (16 bytes). The derived 64 bytes
are the AES key, then the MAC's k and r.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from agents.restic.keyfolders import KeyFolder, LocalKeyFolder, key_folder
from agents.restic.repository import Repository
from agents.state import StateDir, write_atomically

log = logging.getLogger(__name__)

USERNAME = "drill-agent"  # what ``restic key list`` shows for the agent's keys
# The agent's keys' scrypt parameters: about a millisecond and 4 MiB (the password has 256 bits of entropy).
AGENT_N, AGENT_R, AGENT_P = 4096, 8, 1
SALT_BYTES = 64  # restic refuses other salt lengths
# The most a key file found in the repository may make scrypt use: restic's own are ≈ 32-60 MiB; a planted key
# file with enormous parameters is skipped, not computed.
MAX_SCRYPT_MEMORY = 256 << 20
MAX_SCRYPT_WORK = 1 << 26  # N·r·p: restic calibrates to half a second within 60 MiB (here 2^21), so 32 times that
MAX_KEY_FILES = 20  # restic tries no more than this many keys either
MAX_KEYS_BEFORE_OURS = 10  # a repository shared by many agents: see _add_key
RETRY_AFTER = 3600.0  # seconds before a key that could not be used is tried again (each try costs a scrypt)
MAX_KEY_FILE_BYTES = 64 << 10


class KeyFileError(ValueError):
    """A key file that cannot be opened with the password (or is not a restic key file)."""


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    """scrypt's 64 bytes, split as restic does: AES key, MAC k, MAC r."""
    if (n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * r * (n + p + 2) > MAX_SCRYPT_MEMORY
            or n * r * p > MAX_SCRYPT_WORK):
        raise KeyFileError(f"scrypt parameters N={n} r={r} p={p} are not ones restic makes")
    derived = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=MAX_SCRYPT_MEMORY + (1 << 20), dklen=64)
    return derived[:32], derived[32:48], derived[48:]


def _mac(ciphertext: bytes, nonce: bytes, k: bytes, r: bytes) -> bytes:
    """Poly1305-AES: Poly1305 with the one-time key r || AES_k(nonce) (Poly1305 clamps r itself)."""
    # One block (the nonce) through the raw cipher, as Poly1305-AES defines it: not a mode for data.
    encryptor = Cipher(algorithms.AES(k), modes.ECB()).encryptor()  # noqa: S305
    s = encryptor.update(nonce) + encryptor.finalize()
    return Poly1305.generate_tag(r + s, ciphertext)


def open_key_file(document: bytes, password: bytes) -> bytes:
    """The master key (restic's JSON of it) sealed in key file ``document``. Raises :class:`KeyFileError` when
    ``password`` does not open it or it is not a restic scrypt key file."""
    try:
        key = json.loads(document)
        if key.get("kdf") != "scrypt":
            raise KeyFileError(f"key derivation {str(key.get('kdf'))[:40]!r}, not scrypt")
        salt, data = base64.b64decode(key["salt"], validate=True), base64.b64decode(key["data"], validate=True)
        n, r, p = (int(key[name]) for name in ("N", "r", "p"))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
        raise KeyFileError(f"not a restic key file: {error}") from error
    if len(data) < 32:
        raise KeyFileError("not a restic key file: its data is too short")
    aes_key, k, r_key = _derive(password, salt, n, r, p)
    nonce, ciphertext, tag = data[:16], data[16:-16], data[-16:]
    if not secrets.compare_digest(_mac(ciphertext, nonce, k, r_key), tag):
        raise KeyFileError("the password does not open it")
    decryptor = Cipher(algorithms.AES(aes_key), modes.CTR(nonce)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def seal_key_file(master: bytes, password: bytes, host: str) -> bytes:
    """A new restic key file holding ``master`` (as :func:`open_key_file` returned it), opened by ``password``
    with the agent's cheap scrypt parameters."""
    salt = os.urandom(SALT_BYTES)
    aes_key, k, r_key = _derive(password, salt, AGENT_N, AGENT_R, AGENT_P)
    nonce = os.urandom(16)
    encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(nonce)).encryptor()
    ciphertext = encryptor.update(master) + encryptor.finalize()
    document = {
        "created": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "username": USERNAME, "hostname": host, "kdf": "scrypt", "N": AGENT_N, "r": AGENT_R, "p": AGENT_P,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(nonce + ciphertext + _mac(ciphertext, nonce, k, r_key)).decode(),
    }
    return json.dumps(document).encode()


@dataclass(frozen=True)
class AgentKey:
    """The agent's key to one repository: its id (the key file's name) and the file holding its password."""

    key_id: str
    password_file: str


def with_agent_key(repository: Repository, state: StateDir, host: str) -> Repository:
    """``repository`` opened with the agent's own key (made now when there is none, or it was removed), or as
    configured when it cannot have one (see the module's docstring); never raises for a key it cannot make."""
    try:
        key = _agent_key(repository, state, host)
    except (OSError, KeyFileError) as error:
        log.warning("repository %r is opened with its configured password (no key of the agent's own: %s)",
                    repository.name, error)
        return repository
    if key is None:
        return repository
    return repository.opened_with(key.password_file, key.key_id)


def _agent_key(repository: Repository, state: StateDir, host: str) -> AgentKey | None:
    folder = key_folder(repository)
    if folder is None or repository.password_file is None or repository.password_command is not None:
        return None
    if isinstance(folder, LocalKeyFolder) and not os.path.isdir(folder.path):
        return None  # not initialised yet: restic says so, with the configured password
    with open(repository.password_file, "rb") as handle:
        # As restic reads it: the whole file, a UTF-8 byte-order mark and surrounding white space removed.
        password = handle.read(MAX_KEY_FILE_BYTES).removeprefix(b"\xef\xbb\xbf").strip()
        seen = _seen(repository, os.fstat(handle.fileno()))
    with _locked(state, repository.name) as (note_path, password_path):
        note = _read_note(note_path)
        until = note.get("until") if note is not None else None
        if note is not None and note.get("declined") == seen and isinstance(until, float) and until > time.time():
            return None  # it could not be used a moment ago (logged then); tried again an hour later
        try:
            return _usable_key(repository, folder, password, note, note_path, password_path, host)
        except (OSError, KeyFileError):
            declined = {**(note or {}), "declined": seen, "until": time.time() + RETRY_AFTER}  # the key's id kept
            write_atomically(note_path, json.dumps(declined).encode())
            raise


def _usable_key(repository: Repository, folder: KeyFolder, password: bytes, note: dict[str, object] | None,
                note_path: str, password_path: str, host: str) -> AgentKey:
    """The agent's key as the note says, when nothing changed since; else the configured password proven
    again, and the key kept or made anew. Raises ``OSError`` and :class:`KeyFileError`."""
    own = _read_secret(password_path)
    if (note is not None and own is not None and note.get("url") == repository.url
            and secrets.compare_digest(str(note.get("password_mac")), _password_mac(own, password))
            and folder.holds(str(note.get("opened_by"))) and folder.holds(str(note.get("key_id")))):
        return AgentKey(str(note["key_id"]), password_path)
    # Something changed (or there is no key yet): the configured password must open a key of the
    # repository again before the agent's own key is used -- a password file that went stale (the
    # operator's key changed, the file mistyped) must fail the jobs now, not on the day the agent's state
    # is lost with its host and only the configured password is left.
    master, opened_by = _master_key(folder, password)
    if note is not None and own is not None and note.get("url") == repository.url \
            and _opens(folder, str(note.get("key_id")), own):
        key_id = str(note["key_id"])
    else:
        own = secrets.token_hex(32).encode()
        key_id = _add_key(folder, master, own, password_path, host)
        log.info("made the agent's own key %s in repository %r", key_id[:8], repository.name)
    write_atomically(note_path, json.dumps({"url": repository.url, "key_id": key_id, "opened_by": opened_by,
                                            "password_mac": _password_mac(own, password)}).encode())
    return AgentKey(key_id, password_path)


def _opens(folder: KeyFolder, key_id: str, own: bytes) -> bool:
    """Whether the agent's password ``own`` opens key ``key_id`` (there, and still the agent's)."""
    try:
        open_key_file(folder.read(key_id, MAX_KEY_FILE_BYTES), own)
    except (OSError, KeyFileError):
        return False
    return True


def _seen(repository: Repository, password_file: os.stat_result) -> str:
    """What a decline is remembered for: the repository's URL and the configured password file's version."""
    return f"{repository.url} {password_file.st_ino} {password_file.st_mtime_ns} {password_file.st_size}"


def _add_key(folder: KeyFolder, master: bytes, own: bytes, password_path: str, host: str) -> str:
    """Seal ``master`` with password ``own`` (kept at ``password_path`` first) into a new key file in ``folder``;
    its id. Refused when the repository holds many keys already: restic tries at most 20 keys for a password
    given without a key hint, so an operator's key must not be pushed out of reach by agents' keys."""
    if len(folder.names()) >= MAX_KEYS_BEFORE_OURS:
        raise KeyFileError(f"the repository holds {MAX_KEYS_BEFORE_OURS} or more keys already (restic tries at "
                           "most 20 without a key hint): the agent adds none of its own")
    document = seal_key_file(master, own, host)
    key_id = hashlib.sha256(document).hexdigest()  # a key file's name is its content's hash, as every file's
    write_atomically(password_path, own)
    folder.write(key_id, document)
    return key_id


def _password_mac(own: bytes, configured: bytes) -> str:
    """What the note keeps of the configured password: a MAC keyed with the agent key's own password, so that a
    change of the file is seen without keeping anything a password could be guessed from."""
    return hmac.new(own, configured, hashlib.sha256).hexdigest()


def _master_key(folder: KeyFolder, password: bytes) -> tuple[bytes, str]:
    """The master key and the id of the first key file in ``folder`` the configured password opens."""
    tried = []
    for name in folder.names()[:MAX_KEY_FILES]:
        try:
            return open_key_file(folder.read(name, MAX_KEY_FILE_BYTES), password), name
        except (OSError, KeyFileError) as error:
            tried.append(f"{name[:8]}: {error}")
    raise KeyFileError("the configured password opens none of the repository's key files (" + "; ".join(tried)
                       + ")")


def _read_secret(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(4096) or None
    except OSError:
        return None


def _read_note(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as handle:
            note = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


@contextlib.contextmanager
def _locked(state: StateDir, name: str) -> Iterator[tuple[str, str]]:
    """The note and password paths of repository ``name``'s agent key, under a lock: two jobs starting at once
    make one key, not two."""
    folder = state.sub("repository-keys")
    fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield os.path.join(folder, f"{name}.json"), os.path.join(folder, f"{name}.password")
    finally:
        os.close(fd)
