"""Sessions of the web view: a cookie signed with this coordinator's secret, and the CSRF token of each form.

The cookie holds the account, its role, when the session ends and a random
session id, authenticated with HMAC-SHA256 under a 32-byte secret kept in
``state_dir/web/secret`` (0600): a cookie from another server, edited or expired,
is no session. Forms carry ``HMAC(secret, "csrf" + session id)``; a POST without
it is refused. Cookies are ``Secure; HttpOnly; SameSite=Strict``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

COOKIE = "drill_session"
LIFETIME = 8 * 3600.0


@dataclass(frozen=True)
class Session:
    name: str
    role: str
    expires: float
    sid: str


def load_secret(state_dir: str) -> bytes:
    """The web view's secret, made the first time (0600). Raises ``OSError``."""
    directory = os.path.join(state_dir, "web")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "secret")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            return handle.read()
    with os.fdopen(descriptor, "wb") as handle:
        secret = secrets.token_bytes(32)
        handle.write(secret)
        return secret


class Sessions:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, data, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, name: str, role: str, now: float) -> tuple[str, Session]:
        session = Session(name, role, now + LIFETIME, secrets.token_urlsafe(16))
        body = base64.urlsafe_b64encode(json.dumps(
            {"n": name, "r": role, "e": session.expires, "s": session.sid}).encode()).decode().rstrip("=")
        return f"{body}.{self._mac(body.encode())}", session

    def read(self, cookie: str | None, now: float) -> Session | None:
        if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(str(data["n"]), str(data["r"]), float(data["e"]), str(data["s"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > now else None

    def csrf(self, session: Session) -> str:
        return self._mac(b"csrf" + session.sid.encode())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))
