"""HTTPS for the control plane: a configured certificate, or a self-signed one made on first start.

The self-signed certificate names the box's host names and addresses as subject alternative
names, lasts 10 years, and is remade when a name or address is missing from it or it has less
than 30 days left. Its SHA-256 fingerprint goes to the journal, so staff can check what their
browser shows. TLS 1.2 is the minimum; TLS 1.3 is preferred whenever the client has it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import ApplianceConfig

VALID_DAYS = 3650
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class TlsSetup:
    context: ssl.SSLContext | None
    detail: str  # for the state line and the journal


def box_names() -> tuple[list[str], list[str]]:
    """The host names and IP addresses this box answers to."""
    names = {"localhost", socket.gethostname()}
    fqdn = socket.getfqdn()
    if fqdn and fqdn != "localhost":
        names.add(fqdn)
    addresses = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    # IPv4 addresses of the box's own interfaces: in the kernel's FIB each is a "|-- a.b.c.d"
    # line followed by "/32 host LOCAL".
    previous = ""
    for line in _proc_lines("/proc/net/fib_trie"):
        text = line.strip()
        if "/32 host LOCAL" in text and _is_ip(previous):
            addresses.add(previous)
        previous = text[4:] if text.startswith("|-- ") else ""
    return sorted(names), sorted(addresses)


def _proc_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _current(cert_file: Path, names: list[str], addresses: list[str]) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    have = set(san.get_values_for_type(x509.DNSName)) | {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    if not set(names) | set(addresses) <= have or left < datetime.timedelta(days=RENEW_BEFORE_DAYS):
        return None
    return cert


def self_signed(folder: Path) -> tuple[Path, Path, x509.Certificate, bool]:
    """The box's certificate and key in ``folder``: (cert, key, certificate, made now)."""
    cert_file, key_file = folder / "api-cert.pem", folder / "api-key.pem"
    names, addresses = box_names()
    if (cert := _current(cert_file, names, addresses)) is not None and key_file.exists():
        return cert_file, key_file, cert, False
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname()[:64] or "appliance"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "appliance (self-signed)")])
    alternative = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    for path, data in ((key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())),
                       (cert_file, cert.public_bytes(serialization.Encoding.PEM))):
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        tmp.replace(path)
    return cert_file, key_file, cert, True


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def tls_for(config: ApplianceConfig) -> TlsSetup:
    """What the api serves: HTTPS with the configured or self-signed certificate, or plain HTTP."""
    api = config.api
    tls = api.tls
    mode = api.tls_mode
    if mode == "off":
        where = "loopback only" if api.loopback_only else "ON THE NETWORK (api.tls.mode: off)"
        return TlsSetup(None, f"plain HTTP, {where}")
    if mode == "files":
        assert tls.cert_file is not None and tls.key_file is not None
        cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
        return TlsSetup(server_context(tls.cert_file, tls.key_file),
                        f"HTTPS with {tls.cert_file} (SHA-256 {fingerprint(cert)})")
    cert_file, key_file, cert, made = self_signed(config.paths.state_dir / "tls")
    action = "made a self-signed certificate" if made else "self-signed certificate"
    return TlsSetup(server_context(cert_file, key_file), f"HTTPS, {action} (SHA-256 {fingerprint(cert)})")
