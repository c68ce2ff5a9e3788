"""The cluster's own CA and node certificates (no broker): what Kafka and clients will check."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streams import tls


def _load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_node_keystore_is_key_then_chain_signed_by_the_ca(tmp_path: Path) -> None:
    ca = x509.load_pem_x509_certificate(tls.ensure_ca(tmp_path).read_bytes())
    store = tls.ensure_node_keystore(tmp_path, 2)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, what PEM keystores read
    node, chain_ca = _load_chain(store)
    assert chain_ca == ca
    node.verify_directly_issued_by(ca)
    assert node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "broker-2"
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    assert isinstance(node.public_key(), ec.EllipticCurvePublicKey)
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600


def test_made_once(tmp_path: Path) -> None:
    first = tls.ensure_node_keystore(tmp_path, 1).read_bytes()
    assert tls.ensure_node_keystore(tmp_path, 1).read_bytes() == first
    assert tls.ensure_ca(tmp_path).read_bytes() == tls.ca_file(tmp_path).read_bytes()


def test_client_context_trusts_only_the_cluster_ca(tmp_path: Path) -> None:
    ctx = tls.client_context(tls.ensure_ca(tmp_path))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [
        ((("organizationName", "CardBus"),), (("commonName", tls.CA_NAME),))]
