"""Signed agent requests (RFC 9421 subset) and the coordinator's pinned TLS certificate: pure builders."""

from __future__ import annotations

import pathlib

import pytest

from agents.contract import httpsig, signing
from drill.fleet import tls

NOW = 1_800_000_000.0


def _key(tmp_path: pathlib.Path) -> signing.SigningKey:
    key, _ = signing.ensure_key(str(tmp_path / "keys"), "sha256")
    return key


def _parsed(headers: dict[str, str], body: bytes) -> httpsig.SignedRequest:
    return httpsig.parse_request_signature({k.lower(): v for k, v in headers.items()}, body)


def test_a_signed_request_verifies_with_the_agents_key(tmp_path: pathlib.Path) -> None:
    key = _key(tmp_path)
    body = b'{"records": []}'
    request = _parsed(httpsig.sign_request(key, "post", "/v1/records", body, now=NOW), body)
    assert request.keyid == key.keyid
    httpsig.verify_request(request, key.public, "POST", "/v1/records", now=NOW + 10)


@pytest.mark.parametrize(("method", "path", "body", "now", "code"), [
    ("POST", "/v1/records", b'{"records": [1]}', NOW, "digest_mismatch"),
    ("POST", "/v1/jobs/next", b'{"records": []}', NOW, "bad_signature"),
    ("GET", "/v1/records", b'{"records": []}', NOW, "bad_signature"),
    ("POST", "/v1/records", b'{"records": []}', NOW + httpsig.WINDOW_SECONDS + 1, "stale_request"),
    ("POST", "/v1/records", b'{"records": []}', NOW - httpsig.WINDOW_SECONDS - 1, "stale_request"),
])
def test_a_request_altered_moved_or_stale_is_refused_by_name(
    tmp_path: pathlib.Path, method: str, path: str, body: bytes, now: float, code: str
) -> None:
    key = _key(tmp_path)
    headers = httpsig.sign_request(key, "POST", "/v1/records", b'{"records": []}', now=NOW)
    with pytest.raises(httpsig.RequestRefused) as refused:
        httpsig.verify_request(_parsed(headers, body), key.public, method, path, now=now)
    assert refused.value.code == code


@pytest.mark.parametrize(("header", "value", "code"), [
    ("Signature", None, "unsigned"),
    ("Signature-Input", 'drill=("@method");created=1;nonce="00";keyid="x";alg="ed25519"', "malformed_signature"),
    ("Signature-Input", "x" * (httpsig.MAX_HEADER + 1), "malformed_signature"),
    ("Signature", "drill=:not base64:", "malformed_signature"),
])
def test_missing_or_malformed_signature_headers_are_refused(
    tmp_path: pathlib.Path, header: str, value: str | None, code: str
) -> None:
    headers = httpsig.sign_request(_key(tmp_path), "POST", "/v1/records", b"{}", now=NOW)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    with pytest.raises(httpsig.RequestRefused) as refused:
        _parsed(headers, b"{}")
    assert refused.value.code == code


def test_another_agents_key_does_not_verify(tmp_path: pathlib.Path) -> None:
    mine, other = _key(tmp_path / "a"), _key(tmp_path / "b")
    request = _parsed(httpsig.sign_request(mine, "POST", "/v1/poll", b"{}", now=NOW), b"{}")
    with pytest.raises(httpsig.RequestRefused) as refused:
        httpsig.verify_request(request, other.public, "POST", "/v1/poll", now=NOW)
    assert refused.value.code == "bad_signature"


def test_each_request_has_its_own_nonce(tmp_path: pathlib.Path) -> None:
    key = _key(tmp_path)
    nonces = {_parsed(httpsig.sign_request(key, "POST", "/v1/poll", b"{}", now=NOW), b"{}").nonce
              for _ in range(50)}
    assert len(nonces) == 50


def test_the_self_signed_certificate_is_made_once_and_pinned_by_its_fingerprint(tmp_path: pathlib.Path) -> None:
    files = tls.self_signed(str(tmp_path / "tls"), ["coordinator.example", "127.0.0.2"])
    first = files.fingerprint
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert (tmp_path / "tls" / "coordinator.key").stat().st_mode & 0o077 == 0
    assert tls.self_signed(str(tmp_path / "tls"), []).fingerprint == first  # kept, not remade
    with pytest.raises(tls.TlsError):
        tls.certificate_fingerprint(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
