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

The configured password stays the one that matters. The agent's key is used
only while the configured password is known to open a key of the repository:
whenever the password file or the key it opened changes, it is proven again
(one scrypt), so a stale password file fails the jobs at once. When the key it
opens is another than before (the operator rotated theirs), the agent's key is
replaced too and the old one removed: a copy of the agent's old password opens
nothing after a rotation.

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
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from agents.restic.keyfolders import KEY_ID, KeyFolder, key_folder
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
MAX_SCRYPT_WORK = 1 << 24  # N·r·p of one key: restic calibrates to half a second (2^21 here): 8 times that
MAX_TOTAL_WORK = 1 << 25  # N·r·p of all the keys tried for one open
MAX_KEY_FILES = 20  # restic tries no more than this many keys either
MAX_KEYS_BEFORE_OURS = 10  # a repository shared by many agents: see _add_key
RETRY_AFTER = 3600.0  # seconds before a key that could not be used is tried again (each try costs a scrypt)
MAX_KEY_FILE_BYTES = 64 << 10
MAX_PASSWORD_BYTES = 64 << 10
LOCK_WAIT = 30.0  # seconds a job waits for another that is making the key, then goes without


class KeyFileError(ValueError):
    """A key file that cannot be opened with the password (or is not a restic key file)."""


def _acceptable(n: int, r: int, p: int) -> bool:
    """Whether scrypt parameters are ones restic could have made: anything else is refused without computing."""
    return (n >= 2 and not n & (n - 1) and r >= 1 and p >= 1 and 128 * r * (n + p + 2) <= MAX_SCRYPT_MEMORY
            and n * r * p <= MAX_SCRYPT_WORK)


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    """scrypt's 64 bytes, split as restic does: AES key, MAC k, MAC r."""
    if not _acceptable(n, r, p):
        raise KeyFileError(f"scrypt parameters N={n} r={r} p={p} are not ones restic makes")
    try:
        derived = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=MAX_SCRYPT_MEMORY + (1 << 20), dklen=64)
    except ValueError as error:  # parameters OpenSSL refuses (N ≥ 2^(16·r)), which Go's scrypt would take
        raise KeyFileError(f"scrypt parameters N={n} r={r} p={p}: {error}") from error
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
        kdf = key.get("kdf")
        salt, data = base64.b64decode(key["salt"], validate=True), base64.b64decode(key["data"], validate=True)
        n, r, p = (int(key[name]) for name in ("N", "r", "p"))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, RecursionError) as error:
        raise KeyFileError(f"not a restic key file: {type(error).__name__}") from error
    if kdf != "scrypt":
        raise KeyFileError(f"key derivation {str(kdf)[:40]!r}, not scrypt")
    if len(data) < 32 or len(salt) != SALT_BYTES:
        raise KeyFileError("not a restic key file: its data is too short or its salt not 64 bytes")
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
    configured when it cannot have one (see the module's docstring). Never raises: whatever goes wrong here
    (a key folder that answers nonsense, a planted key file, a bug) leaves a slower job, not a failed one."""
    try:
        key = _agent_key(repository, state, host)
    except Exception as error:
        log.warning("repository %r is opened with its configured password (no key of the agent's own: %s: %s)",
                    repository.name, type(error).__name__, error)
        return repository
    if key is None:
        return repository
    return repository.opened_with(key.password_file, key.key_id)


def _agent_key(repository: Repository, state: StateDir, host: str) -> AgentKey | None:
    """The agent's usable key to ``repository``; None when it has none and is not to make one now (another
    backend, a password command, no repository there yet, another job busy making it, or a failure within the
    hour). Raises what reading and writing the key folder raise."""
    if key_folder(repository) is None or repository.password_file is None or repository.password_command is not None:
        return None
    with open(repository.password_file, "rb") as handle:
        seen = _seen(repository, os.fstat(handle.fileno()))  # before the read: an edit in between is a change
        # As restic reads it: the whole file, a UTF-8 byte-order mark and surrounding white space removed.
        password = handle.read(MAX_PASSWORD_BYTES).removeprefix(b"\xef\xbb\xbf").strip()
    with _locked(state, repository.name) as files:
        if files is None:
            return None  # another job of this agent is making the key right now: this one goes without
        folder = key_folder(repository)  # here: an S3 folder's time budget starts after the wait for the lock
        assert folder is not None
        note = _read_note(files.note)
        until = note.get("until") if note is not None else None
        if note is not None and note.get("declined") == seen and isinstance(until, float) and until > time.time():
            return None  # it could not be used a moment ago (logged then); tried again an hour later
        try:
            return _usable_key(repository, folder, password, seen, note, files, host)
        except Exception:
            declined = {**(note or {}), "declined": seen, "until": time.time() + RETRY_AFTER}  # the key's id kept
            write_atomically(files.note, json.dumps(declined).encode())
            raise


def _usable_key(repository: Repository, folder: KeyFolder, password: bytes, seen: str,
                note: dict[str, object] | None, files: _StateFiles, host: str) -> AgentKey | None:
    """The agent's key as the note says, when nothing changed since; else the configured password proven again
    and the key kept -- or, when there is none or the operator's key changed, a new one made and the old one
    removed. None when the repository has no key yet (not initialised). Raises ``OSError`` and
    :class:`KeyFileError`."""
    named = note.get("key_id") if note is not None and note.get("url") == repository.url else None
    key_id = named if isinstance(named, str) and KEY_ID.fullmatch(named) else None
    own = _read_secret(files.password(key_id)) if key_id is not None else None
    opened_before = str(note.get("opened_by")) if note is not None else None
    if (note is not None and key_id is not None and own is not None and note.get("seen") == seen
            and folder.holds(str(opened_before)) and folder.holds(key_id)):
        return AgentKey(key_id, files.password(key_id))
    # Something changed (or there is no key yet): the configured password must open a key of the repository
    # again before the agent's own key is used -- a password file that went stale (the operator's key changed,
    # the file mistyped) must fail the jobs now, not on the day the agent's state is lost with its host and only
    # the configured password is left.
    names = folder.names()
    if not names:
        return None  # no repository there yet: restic says so, with the configured password
    master, opened_by = _master_key(folder, names, password, first=opened_before)
    keep = (key_id is not None and own is not None and opened_by == opened_before
            and _opens(folder, key_id, own))
    if not keep:
        # No key yet, or the operator's key changed (a rotation): a key made under the old one is removed first
        # (a job still running on it fails its next command; a leaked copy of its password must open nothing),
        # whether or not a new one can be made.
        _remove_others(folder, files, keep=None)
        own = secrets.token_hex(32).encode()
        key_id = _add_key(folder, master, own, files, host)
        log.info("made the agent's own key %s in repository %r", key_id[:8], repository.name)
    assert key_id is not None
    write_atomically(files.note, json.dumps({"url": repository.url, "key_id": key_id, "opened_by": opened_by,
                                             "seen": seen}).encode())
    _remove_others(folder, files, keep=key_id)  # what a crash or a failed removal left behind
    return AgentKey(key_id, files.password(key_id))


def _opens(folder: KeyFolder, key_id: str, own: bytes) -> bool:
    """Whether the agent's password ``own`` opens key ``key_id``: False when the key is gone or is not the one
    it opens; raises ``OSError`` when the folder could not say (a key is not given up for a failed request)."""
    try:
        open_key_file(folder.read(key_id, MAX_KEY_FILE_BYTES), own)
    except KeyFileError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOENT, 404):
            return False
        raise
    return True


def _seen(repository: Repository, password_file: os.stat_result) -> str:
    """Which configured password the note is about: the repository's URL and the password file's version (its
    device, inode, time of last change -- which no one can set back -- and size). Nothing is kept a password could
    be guessed from."""
    return (f"{repository.url} {password_file.st_dev} {password_file.st_ino} {password_file.st_ctime_ns} "
            f"{password_file.st_size}")


def _add_key(folder: KeyFolder, master: bytes, own: bytes, files: _StateFiles, host: str) -> str:
    """Seal ``master`` with password ``own`` (kept in the state first) into a new key file in ``folder``; its id.
    Refused when the repository holds many keys already: restic tries at most 20 keys for a password given
    without a key hint, so an operator's key must not be pushed out of reach by agents' keys."""
    if len(folder.names()) >= MAX_KEYS_BEFORE_OURS:
        raise KeyFileError(f"the repository holds {MAX_KEYS_BEFORE_OURS} or more keys already (restic tries at "
                           "most 20 without a key hint): the agent adds none of its own")
    document = seal_key_file(master, own, host)
    key_id = hashlib.sha256(document).hexdigest()  # a key file's name is its content's hash, as every file's
    # First, and durably: a key in the repository whose password a crash lost is litter nobody can remove.
    write_atomically(files.password(key_id), own, durable=True)
    folder.write(key_id, document)
    return key_id


def _remove_others(folder: KeyFolder, files: _StateFiles, keep: str | None) -> None:
    """Remove the agent's keys to this repository but ``keep`` (an older one, or one a crash left unnamed), from
    the repository and then from the state; what cannot be removed now is logged and tried again the next time the
    configured password is proven."""
    try:
        others = files.other_keys(keep)
    except OSError as error:
        log.warning("the agent's old keys could not be listed: %s", error)
        return
    for key_id in others:
        try:
            folder.remove(key_id)
            os.unlink(files.password(key_id))
        except OSError as error:
            log.warning("the agent's old key %s could not be removed yet: %s", key_id[:8], error)


def _master_key(folder: KeyFolder, names: list[str], password: bytes, first: str | None) -> tuple[bytes, str]:
    """The master key and the id of the first key file in ``folder`` the configured password opens (``first``,
    the one it opened last time, tried first). Raises :class:`KeyFileError` when it opens none, or when the key
    files ask for more scrypt work in all than restic would ever calibrate (planted ones)."""
    order = sorted(names, key=lambda name: name != first)[:MAX_KEY_FILES]  # the one it opened last time first
    tried = []
    work = 0
    for name in order:
        try:
            document = folder.read(name, MAX_KEY_FILE_BYTES)
            work += _work(document)
            if work > MAX_TOTAL_WORK:
                tried.append(f"{name[:8]}: not tried (the key files before it asked for enough work)")
                break
            return open_key_file(document, password), name
        except KeyFileError as error:
            tried.append(f"{name[:8]}: {error}")
    raise KeyFileError("the configured password opens none of the repository's key files (" + "; ".join(tried)
                       + ")")


def _work(document: bytes) -> int:
    """The scrypt work (N·r·p) opening a key file costs; 0 when it is refused without computing."""
    try:
        key = json.loads(document)
        n, r, p = int(key["N"]), int(key["r"]), int(key["p"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return 0
    return n * r * p if _acceptable(n, r, p) else 0


def _read_secret(path: str) -> bytes | None:
    """The agent key's password kept at ``path``; None when there is none. Raises ``OSError`` when it cannot be
    read (a key is not replaced for that)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4096) or None
    except FileNotFoundError:
        return None


def _read_note(path: str) -> dict[str, object] | None:
    """The note at ``path`` (which key, opened after which key and password file, or a decline); None when there
    is none or it is not JSON (then the configured password is proven again). Raises ``OSError`` when it cannot
    be read."""
    try:
        with open(path, "rb") as handle:
            note = json.loads(handle.read(4096))
    except (FileNotFoundError, ValueError, RecursionError):
        return None
    return note if isinstance(note, dict) else None


@dataclass(frozen=True)
class _StateFiles:
    """Where the state keeps one repository's agent key: ``NAME.json`` (the note), ``NAME.KEYID.password``."""

    folder: str
    name: str

    @property
    def note(self) -> str:
        return os.path.join(self.folder, f"{self.name}.json")

    def password(self, key_id: str) -> str:
        return os.path.join(self.folder, f"{self.name}.{key_id}.password")

    def other_keys(self, keep: str | None) -> list[str]:
        """The ids of the keys but ``keep`` whose passwords the state holds for this repository."""
        found = (re.fullmatch(rf"{re.escape(self.name)}\.([0-9a-f]{{64}})\.password", entry)
                 for entry in sorted(os.listdir(self.folder)))
        return [match.group(1) for match in found if match is not None and match.group(1) != keep]


@contextlib.contextmanager
def _locked(state: StateDir, name: str) -> Iterator[_StateFiles | None]:
    """Repository ``name``'s key files in the state, under a lock (two jobs starting at once make one key, not
    two); None when another process held the lock for ``LOCK_WAIT`` seconds."""
    files = _StateFiles(state.sub("repository-keys"), name)
    fd = os.open(os.path.join(files.folder, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield None
                    return
                time.sleep(0.05)
        yield files
    finally:
        os.close(fd)
