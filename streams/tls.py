"""The local cluster's own certificate authority and node certificates (``cryptography``).

``cardbus broker start`` makes, once per cluster folder, a CA (EC P-256, ten years) and for each
node a certificate for ``127.0.0.1``/``localhost`` signed by it, written as PEM: Kafka reads
them with ``ssl.keystore.type=PEM`` (no Java keytool), Python clients trust the CA through an
``ssl.SSLContext``, kcat through ``ssl.ca.location``.

Layout under ``<cluster>/tls/``: ``ca.pem`` (public: what clients trust), ``ca.key`` (0600, only
to issue node certificates), ``node-<n>.pem`` (0600: the node's PKCS#8 key, then its
certificate and the CA certificate, the PEM keystore Kafka reads).

Node certificates carry ``CN=broker-<n>`` and both TLS usages: a node is a server to clients and
to the other nodes, and a client (mutual TLS) on the inter-broker and controller listeners,
where Kafka maps that subject to the principal ``User:broker``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cardbus.errors import ConfigError

CA_DAYS = 3650
NODE_DAYS = 825
CA_NAME = "CardBus local Kafka CA"
NODE_PREFIX = "broker-"


def ca_file(home: Path) -> Path:
    """The CA certificate clients trust (``<cluster>/tls/ca.pem``)."""
    return home / "tls" / "ca.pem"


def node_keystore(home: Path, node: int) -> Path:
    """Node ``node``'s PEM keystore: PKCS#8 key, certificate, CA certificate."""
    return home / "tls" / f"node-{node}.pem"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CardBus"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ensure_ca(home: Path) -> Path:
    """Make the cluster's CA once; returns ``ca.pem``."""
    cert_path, key_path = ca_file(home), home / "tls" / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME)).issuer_name(_name(CA_NAME))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _pkcs8(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def ensure_node_keystore(home: Path, node: int) -> Path:
    """Issue node ``node``'s key and certificate once (under the cluster's CA)."""
    path = node_keystore(home, node)
    if path.exists():
        return path
    ca_pem = ensure_ca(home).read_bytes()
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key((home / "tls" / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{home / 'tls' / 'ca.key'} is not the CA's EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{NODE_PREFIX}{node}")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(path, _pkcs8(key) + cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    return path


def client_context(ca: Path) -> ssl.SSLContext:
    """An ``SSLContext`` for a client: TLS 1.2+, trusting only ``ca``, checking host names."""
    if not ca.exists():
        raise ConfigError(f"CA certificate {ca} not found: is the broker started with TLS "
                          "(`cardbus broker start`), or set CARDBUS_KAFKA_CA")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
