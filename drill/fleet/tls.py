"""The coordinator's TLS certificate: the operator's, or a self-signed one kept in ``state_dir/tls/``.

Agents pin the certificate's fingerprint at enrolment (``sha256:<64 hex>`` of its DER bytes), which
``drillctl serve`` prints when it starts, so a self-signed certificate is as good as one from a CA.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agents.contract.errors import DrillError


class TlsError(DrillError):
    code = "tls_unusable"


@dataclass(frozen=True)
class TlsFiles:
    certificate: str
    key: str

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(_read(self.certificate))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    except OSError as error:
        raise TlsError(f"cannot read {path}: {error.strerror}") from error


def certificate_fingerprint(pem: bytes) -> str:
    """``sha256:<hex>`` of a PEM certificate's DER bytes. Raises :class:`TlsError` for text that is not one."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise TlsError(f"not a PEM certificate: {error}") from error
    return "sha256:" + hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def self_signed(directory: str, names: list[str]) -> TlsFiles:
    """The self-signed certificate in ``directory``, made (key 0600) the first time, valid for ``names``
    (host names or IP addresses) for ten years."""
    files = TlsFiles(os.path.join(directory, "coordinator.crt"), os.path.join(directory, "coordinator.key"))
    if os.path.exists(files.certificate) and os.path.exists(files.key):
        return files
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drill coordinator")])
    alternative: list[x509.GeneralName] = []
    for name in dict.fromkeys([*names, "localhost", "127.0.0.1"]):
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(files.key + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    with open(files.certificate + ".new", "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    os.replace(files.key + ".new", files.key)
    os.replace(files.certificate + ".new", files.certificate)
    return files
