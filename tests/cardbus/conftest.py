"""Fixtures for the crypto core tests: every key is generated here, none is committed."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import KeyStore, StorageKeyring
from schemas.base import luhn_ok


def make_pan(prefix: str = "622202", length: int = 16, rng: random.Random | None = None) -> str:
    """A generated, Luhn-valid test PAN."""
    rng = rng or random.Random()
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("no Luhn digit")


@pytest.fixture
def pan_factory() -> Callable[..., str]:
    return make_pan


@pytest.fixture
def pan() -> str:
    return make_pan()


@pytest.fixture
def keyring() -> StorageKeyring:
    return StorageKeyring({1: new_key(KeyAlg.AES)})


@pytest.fixture
def keystore(keyring: StorageKeyring) -> KeyStore:
    return KeyStore(keyring)


@pytest.fixture
def world(keyring: StorageKeyring) -> tuple[PlatformHsm, ProviderHsm, TerminalHsm]:
    """A platform, one provider (bank-a) and one terminal (T-1), fully provisioned."""
    plat = PlatformHsm(KeyStore(keyring))
    prov = ProviderHsm("bank-a", KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    term = TerminalHsm("T-1", KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    kbpk = new_key(KeyAlg.AES)
    plat.import_provider_kbpk("bank-a", kbpk)
    prov.import_kbpk(kbpk)
    for usage in (KeyUsage.PIN_ENC, KeyUsage.PAN_ENC):
        plat.accept_key_block("bank-a", usage, prov.export_key_block(usage))
    for blob in plat.enroll_terminal("T-1", term.public_kex()):
        term.install(blob)
    term.trust_card_ca(prov.card_ca_verifier)
    return plat, prov, term
