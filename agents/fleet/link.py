"""The agent's HTTPS link to its coordinator: the certificate pinned by fingerprint, every request signed.

The coordinator's certificate is not checked against a CA: it is compared, before
anything is sent, with the fingerprint (``sha256:<hex>`` of its DER bytes) the
operator gave at enrolment. A self-signed certificate is thus as good as any, and
a certificate from a CA as good as its pin. Requests are signed with the agent's
key (:mod:`agents.contract.httpsig`); the coordinator's answers are JSON.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from agents.contract import httpsig
from agents.contract.errors import DrillError
from agents.contract.signing import SigningKey

MAX_ANSWER = 64 << 20  # bytes of one answer read at most (a poll with jobs carrying backup records)
TIMEOUT = 30.0


class LinkError(DrillError):
    """The coordinator could not be reached or answered with an error; ``code`` says which.

    ``unreachable`` (connection, TLS, timeout), ``pin_mismatch`` (a certificate other than the pinned one),
    or the coordinator's own refusal code (``agent_revoked``, ``stale_request``, …) with its HTTP ``status``.
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def fingerprint_of(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


class _PinnedConnection(http.client.HTTPSConnection):
    """An HTTPS connection that compares the server's certificate with a pinned fingerprint after the handshake."""

    def __init__(self, host: str, port: int, pin: str, source_address: tuple[str, int] | None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin below is the check, not a CA
        super().__init__(host, port, timeout=TIMEOUT, context=context, source_address=source_address)
        self.pin = pin

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True) or b""
        if fingerprint_of(der) != self.pin:
            self.sock.close()
            raise LinkError("pin_mismatch", f"the coordinator's certificate is {fingerprint_of(der)}, not the pinned "
                            f"{self.pin}: refusing to talk to it (re-enrol if the coordinator's certificate changed)")


@dataclass(frozen=True)
class Link:
    """Where the coordinator is (``https://host:port``), its pinned certificate, and how to sign."""

    url: str
    pin: str
    key: SigningKey
    keyid: str
    source_address: str | None = None

    def _connection(self) -> _PinnedConnection:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise LinkError("bad_url", f"the coordinator URL must be https://HOST:PORT, not {self.url!r}")
        source = (self.source_address, 0) if self.source_address else None
        return _PinnedConnection(parts.hostname, parts.port or 443, self.pin, source)

    def post(self, path: str, document: Any, *, signed: bool = True) -> Any:
        """POST ``document`` as JSON to ``path``; the JSON answer. Raises :class:`LinkError`."""
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers.update(httpsig.sign_request(self.key, "POST", path, body, keyid=self.keyid))
        return self._exchange("POST", path, body, headers)

    def get(self, path: str) -> Any:
        return self._exchange("GET", path, b"", {})

    def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        connection = self._connection()
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER + 1)
        except LinkError:
            raise
        except (OSError, http.client.HTTPException) as error:
            raise LinkError("unreachable", f"cannot reach the coordinator at {self.url}: {error}") from None
        finally:
            connection.close()
        if len(raw) > MAX_ANSWER:
            raise LinkError("answer_too_large", f"the coordinator's answer is over {MAX_ANSWER} bytes")
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise LinkError("bad_answer", f"the coordinator answered {response.status} with no JSON",
                            response.status) from None
        if response.status >= 400:
            code = answer.get("error", "refused") if isinstance(answer, dict) else "refused"
            message = answer.get("message", "") if isinstance(answer, dict) else ""
            raise LinkError(str(code), f"the coordinator refused {path}: {message}", response.status)
        return answer


def fetch_fingerprint(url: str, source_address: str | None = None) -> str:
    """The fingerprint of the certificate the server at ``url`` shows (to print, never to trust on its own)."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    source = (source_address, 0) if source_address else None
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), TIMEOUT, source) as raw, \
                context.wrap_socket(raw) as tls:
            return fingerprint_of(tls.getpeercert(binary_form=True) or b"")
    except OSError as error:
        raise LinkError("unreachable", f"cannot reach {url}: {error}") from None
