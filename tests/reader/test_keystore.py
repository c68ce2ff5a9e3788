"""The sealed terminal key store: enrollment, sealing, issued keys from the platform."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv
from cardbus.crypto.keystore import b64d, b64e
from cardbus.crypto.signing import Signer, Verifier
from cardbus.crypto.wrap import wrap_for_terminal
from cardbus.errors import MissingKeyError, SignatureInvalid, UnwrapError
from reader_agent.keystore import TerminalKeyStore
from schemas.base import new_event_id
from schemas.terminals import IssuedKey, ProviderCardAuthKey, TerminalKeysIssued
from schemas.values import Merchant

MERCHANT = Merchant(merchant_id="M-1", name="Shop", mcc="5411")


@pytest.fixture(autouse=True)
def _no_env_device_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARDBUS_DEVICE_KEY", raising=False)


def _issued(terminal_id: str, wrap_pub: bytes, mac: bytes, pin: bytes,
            platform: Signer, card_auth: bytes) -> TerminalKeysIssued:
    ev = TerminalKeysIssued(
        event_id=new_event_id(), correlation_id="keys", occurred_at=datetime.now(UTC),
        producer="platform", terminal_id=terminal_id,
        keys=(IssuedKey(key_id="T1.mac.1", usage="mac", kcv=kcv(mac, KeyAlg.HMAC),
                        wrapped=wrap_for_terminal(wrap_pub, terminal_id, "T1.mac.1",
                                                  KeyUsage.MAC, mac)),
              IssuedKey(key_id="T1.pin.1", usage="pin_enc", kcv=kcv(pin, KeyAlg.AES),
                        wrapped=wrap_for_terminal(wrap_pub, terminal_id, "T1.pin.1",
                                                  KeyUsage.PIN_ENC, pin))),
        card_auth_keys=(ProviderCardAuthKey(provider_id="bank-a", key_id="bank-a.ca.1",
                                            public_key=b64e(card_auth)),))
    return ev.sealed(platform.seal(ev.canonical_bytes()))  # type: ignore[return-value]


def test_enroll_seals_private_keys_and_signs_enrollment(tmp_path: Path) -> None:
    store = TerminalKeyStore(tmp_path)
    keys, event = store.enroll("T1", MERCHANT)
    raw = store.path.read_bytes()
    assert keys.identity_private.encode() not in raw and keys.wrap_private.encode() not in raw
    assert event.terminal_id == "T1" and event.seal is not None
    Verifier(event.identity_key_id, b64d(event.identity_public_key)).verify_seal(
        event.seal, event.canonical_bytes())
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    assert TerminalKeyStore(tmp_path).load() == keys
    with pytest.raises(MissingKeyError):
        keys.mac_sealer()


def test_wrong_device_key_or_tampering_does_not_open(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = TerminalKeyStore(tmp_path)
    store.enroll("T1", MERCHANT)
    monkeypatch.setenv("CARDBUS_DEVICE_KEY", secrets.token_bytes(32).hex())
    with pytest.raises(UnwrapError):
        TerminalKeyStore(tmp_path).load()
    monkeypatch.delenv("CARDBUS_DEVICE_KEY")
    text = store.path.read_text().replace('"terminal_id": "T1"', '"terminal_id": "T2"')
    store.path.write_text(text)
    with pytest.raises(UnwrapError):
        TerminalKeyStore(tmp_path).load()


def test_apply_issued_keys_from_platform(tmp_path: Path) -> None:
    store = TerminalKeyStore(tmp_path)
    _keys, enrolled = store.enroll("T1", MERCHANT)
    platform = Signer.generate("platform.identity.1")
    mac, pin, card_auth = secrets.token_bytes(32), secrets.token_bytes(16), secrets.token_bytes(32)
    event = _issued("T1", b64d(enrolled.wrap_public_key), mac, pin, platform, card_auth)
    new = store.apply_keys_issued(event, platform.verifier)
    assert new.ready and bytes.fromhex(new.mac_key or "") == mac
    assert new.pin_key_bytes() == pin and new.card_auth_public("bank-a") == card_auth
    assert TerminalKeyStore(tmp_path).load() == new
    assert mac.hex().encode() not in store.path.read_bytes()
    with pytest.raises(SignatureInvalid):
        store.apply_keys_issued(event, Signer.generate("platform.identity.1").verifier)


def test_keys_wrapped_for_another_terminal_are_refused(tmp_path: Path) -> None:
    store = TerminalKeyStore(tmp_path)
    _keys, _enrolled = store.enroll("T1", MERCHANT)
    other = TerminalKeyStore(tmp_path / "other")
    _k2, enrolled2 = other.enroll("T2", MERCHANT)
    platform = Signer.generate("platform.identity.1")
    event = _issued("T1", b64d(enrolled2.wrap_public_key), secrets.token_bytes(32),
                    secrets.token_bytes(16), platform, secrets.token_bytes(32))
    with pytest.raises(UnwrapError):
        store.apply_keys_issued(event)
