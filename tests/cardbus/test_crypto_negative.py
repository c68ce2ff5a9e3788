"""Every verification refuses what it must, with its named error: wrong key, flipped bit,
wrong usage, replayed ATC, truncated block, wrong terminal id, ..."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Literal

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cardbus.crypto import card_auth, emv, pin, tr31, transit, wrap
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import b64d, b64e
from cardbus.crypto.pan import PanCipher, reencrypt_pan
from cardbus.crypto.signing import MacSealer, Signer, seal_event, verify_event
from cardbus.errors import (
    AtcReplayed,
    CardAuthenticationError,
    CryptogramInvalid,
    KeyBlockError,
    KeyBlockHeaderMismatch,
    KeyUsageError,
    MacInvalid,
    PinBlockError,
    SignatureInvalid,
    UnwrapError,
)
from schemas.base import EncryptedBlob, Event

World = tuple[PlatformHsm, ProviderHsm, TerminalHsm]


def flip(data: bytes, bit: int = 0) -> bytes:
    """``data`` with one bit flipped."""
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def flip_b64(text: str, bit: int = 0) -> str:
    return b64e(flip(b64d(text), bit))


class Pinged(Event):
    type: Literal["Pinged"] = "Pinged"
    schema_version: Literal[1] = 1
    note: str


def ping(note: str = "hello") -> Pinged:
    return Pinged(event_id="e" * 16, correlation_id="c-1", occurred_at=datetime.now(UTC),
                  producer="platform", note=note)


# --- signatures and MACs ------------------------------------------------------------------
def test_signature_failures() -> None:
    signer, other = Signer.generate("sign:platform.v1"), Signer.generate("sign:platform.v1")
    sealed = seal_event(ping(), signer)
    verify_event(sealed, {signer.key_id: signer.verifier}.get)
    with pytest.raises(SignatureInvalid):  # wrong key under the same id
        verify_event(sealed, {signer.key_id: other.verifier}.get)
    with pytest.raises(SignatureInvalid):  # a changed field
        verify_event(sealed.model_copy(update={"note": "hellp"}),
                     {signer.key_id: signer.verifier}.get)
    bad = sealed.seal.model_copy(update={"value": flip_b64(sealed.seal.value, 9)})
    with pytest.raises(SignatureInvalid):  # a flipped bit in the signature
        verify_event(sealed.model_copy(update={"seal": bad}), {signer.key_id: signer.verifier}.get)
    with pytest.raises(SignatureInvalid):  # no seal at all
        verify_event(ping(), {signer.key_id: signer.verifier}.get)
    with pytest.raises(SignatureInvalid):  # unknown key id
        verify_event(sealed, {}.get)


def test_mac_failures() -> None:
    key = new_key(KeyAlg.HMAC)
    mac = MacSealer("tmk:T-1.v1", key)
    sealed = seal_event(ping(), mac)
    verify_event(sealed, {mac.key_id: mac}.get)
    with pytest.raises(MacInvalid):
        verify_event(sealed, {mac.key_id: MacSealer(mac.key_id, new_key(KeyAlg.HMAC))}.get)
    with pytest.raises(MacInvalid):
        verify_event(sealed.model_copy(update={"note": "x"}), {mac.key_id: mac}.get)
    with pytest.raises(MacInvalid):  # an HMAC seal presented to an Ed25519 verifier
        verify_event(sealed, {mac.key_id: Signer.generate(mac.key_id).verifier}.get)


def test_terminal_mac_on_platform(world: World) -> None:
    plat, _, term = world
    sealed = term.mac_event(ping())
    plat.verify_terminal_mac("T-1", sealed)
    with pytest.raises(MacInvalid):  # another terminal's id
        plat.verify_terminal_mac("T-2", sealed)
    with pytest.raises(MacInvalid):
        plat.verify_terminal_mac("T-1", sealed.model_copy(update={"note": "tampered"}))


# --- terminal key wrap ----------------------------------------------------------------------
def _terminal_pair() -> tuple[X25519PrivateKey, bytes]:
    priv = X25519PrivateKey.generate()
    return priv, priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_unwrap_failures() -> None:
    priv, pub = _terminal_pair()
    key = new_key(KeyAlg.AES)
    blob = wrap.wrap_for_terminal(pub, "T-1", "tpk:T-1.v1", KeyUsage.PIN_ENC, key)
    assert wrap.unwrap_for_terminal(priv, "T-1", KeyUsage.PIN_ENC, blob) == key
    with pytest.raises(UnwrapError):  # wrong terminal id bound in
        wrap.unwrap_for_terminal(priv, "T-2", KeyUsage.PIN_ENC, blob)
    with pytest.raises(UnwrapError):  # wrong usage
        wrap.unwrap_for_terminal(priv, "T-1", KeyUsage.MAC, blob)
    with pytest.raises(UnwrapError):  # relabelled key id
        wrap.unwrap_for_terminal(priv, "T-1", KeyUsage.PIN_ENC,
                                 blob.model_copy(update={"key_id": "tpk:T-1.v2"}))
    with pytest.raises(UnwrapError):  # another terminal's private key
        wrap.unwrap_for_terminal(_terminal_pair()[0], "T-1", KeyUsage.PIN_ENC, blob)
    with pytest.raises(UnwrapError):  # flipped ciphertext bit
        wrap.unwrap_for_terminal(priv, "T-1", KeyUsage.PIN_ENC,
                                 blob.model_copy(update={"ct": flip_b64(blob.ct, 3)}))
    with pytest.raises(UnwrapError):  # truncated ciphertext
        wrap.unwrap_for_terminal(priv, "T-1", KeyUsage.PIN_ENC,
                                 blob.model_copy(update={"ct": b64e(b64d(blob.ct)[:-1])}))


def test_terminal_refuses_other_terminals_keys(world: World) -> None:
    plat, _, term = world
    other = TerminalHsm("T-2", type(term.keys)(term.keys._keyring))
    blobs = plat.enroll_terminal("T-2", other.public_kex())
    with pytest.raises(UnwrapError):
        term.install(blobs[0])
    # T-2's blob relabelled for T-1 still does not open in T-1
    with pytest.raises(UnwrapError):
        term.install(blobs[0].model_copy(update={"key_id": "tpk:T-1.v9"}))


# --- TR-31 ----------------------------------------------------------------------------------
def test_tr31_failures() -> None:
    kbpk, key = new_key(KeyAlg.AES), new_key(KeyAlg.AES)
    block = tr31.wrap_key_block(kbpk, KeyUsage.PIN_ENC, key)
    assert tr31.unwrap_key_block(kbpk, block, KeyUsage.PIN_ENC)[0] == key
    body = block[16:]
    tampered = block[:16] + ("0" if body[0] != "0" else "1") + body[1:]
    for bad_kbpk, bad_block in ((new_key(KeyAlg.AES), block),  # wrong KBPK
                                (kbpk, block[:-2]),  # truncated
                                (kbpk, tampered),  # one changed digit of the encrypted key
                                (kbpk, block[:11] + "E" + block[12:])):  # header: MAC fails
        with pytest.raises(KeyBlockError) as info:
            tr31.unwrap_key_block(bad_kbpk, bad_block, KeyUsage.PIN_ENC)
        assert type(info.value) is KeyBlockError  # does not open: not a header mismatch
    with pytest.raises(KeyBlockHeaderMismatch):  # a sound block for another usage
        tr31.unwrap_key_block(kbpk, block, KeyUsage.PAN_ENC)
    with pytest.raises(KeyUsageError):  # not a usage that travels by key block
        tr31.wrap_key_block(kbpk, KeyUsage.EMV_IMK_AC, key)


@pytest.mark.parametrize(("field", "value"), [("mode", "B"), ("export", "E"), ("usage", "D0"),
                                              ("alg", "T"), ("alg", "H")])
def test_tr31_header_mismatch(field: str, value: str) -> None:
    # A block properly made (by psec) with the provider's KBPK, but a header the platform is
    # not provisioned for: mode of use, exportability, usage or algorithm different.
    from psec import tr31 as ptr31

    kbpk = new_key(KeyAlg.AES)
    parts = {"usage": "P0", "mode": "E", "export": "N", "alg": "A"} | {field: value}
    header = f"D0000{parts['usage']}{parts['alg']}{parts['mode']}00{parts['export']}0000"
    block = ptr31.wrap(kbpk, header, new_key(KeyAlg.AES))
    with pytest.raises(KeyBlockHeaderMismatch):
        tr31.unwrap_key_block(kbpk, block, KeyUsage.PIN_ENC)


@pytest.mark.parametrize("version_id", ["A", "B", "C"])
def test_tr31_only_version_d_blocks_are_accepted(version_id: str) -> None:
    """TR-31 key block versions A/B/C (TDES derivation or variant) are refused before any
    unwrap: the platform takes AES key derivation (D) blocks only."""
    from psec import tr31 as ptr31

    kbpk = new_key(KeyAlg.TDES)
    block = ptr31.wrap(kbpk, f"{version_id}0000P0AE00N0000", new_key(KeyAlg.AES))
    with pytest.raises(KeyBlockError, match="only TR-31 version D") as info:
        tr31.unwrap_key_block(new_key(KeyAlg.AES), block, KeyUsage.PIN_ENC)
    assert type(info.value) is KeyBlockError


def test_platform_rejects_block_under_other_providers_kbpk(world: World) -> None:
    plat, prov, _ = world
    plat.import_provider_kbpk("bank-b", new_key(KeyAlg.AES))
    with pytest.raises(KeyBlockError):
        plat.accept_key_block("bank-b", KeyUsage.PIN_ENC, prov.export_key_block(KeyUsage.PIN_ENC))


# --- EMV --------------------------------------------------------------------------------------
def _card(pan: str) -> tuple[bytes, bytes, bytes, bytes]:
    imk = new_key(KeyAlg.TDES)
    sk = emv.derive_session_key(emv.derive_icc_master_key(imk, pan), 5)
    data = emv.arqc_data(amount=100, currency_code=156, country_code=156, date="260102",
                         unpredictable_number=os.urandom(4), atc=5)
    return imk, sk, data, emv.generate_arqc(sk, data)


def test_arqc_failures(pan: str) -> None:
    imk, _, data, arqc = _card(pan)
    emv.verify_card_arqc(imk, pan, "00", 5, data, arqc)
    with pytest.raises(CryptogramInvalid):  # wrong issuer key
        emv.verify_card_arqc(new_key(KeyAlg.TDES), pan, "00", 5, data, arqc)
    with pytest.raises(CryptogramInvalid):  # flipped bit in the cryptogram
        emv.verify_card_arqc(imk, pan, "00", 5, data, flip(arqc, 17))
    with pytest.raises(CryptogramInvalid):  # flipped bit in the data (amount)
        emv.verify_card_arqc(imk, pan, "00", 5, flip(data, 40), arqc)
    with pytest.raises(CryptogramInvalid):  # another ATC
        emv.verify_card_arqc(imk, pan, "00", 6, data, arqc)
    with pytest.raises(CryptogramInvalid):  # truncated
        emv.verify_card_arqc(imk, pan, "00", 5, data, arqc[:7])
    with pytest.raises(AtcReplayed):
        emv.check_atc(5, last_atc=5)
    with pytest.raises(AtcReplayed):
        emv.check_atc(4, last_atc=5)
    emv.check_atc(6, last_atc=5)


def test_arpc_failures(pan: str) -> None:
    _, sk, _, arqc = _card(pan)
    arpc1 = emv.generate_arpc_method1(sk, arqc, b"00")
    emv.verify_arpc_method1(sk, arqc, b"00", arpc1)
    with pytest.raises(CryptogramInvalid):  # the ARC changed (approval -> decline)
        emv.verify_arpc_method1(sk, arqc, b"05", arpc1)
    arpc2 = emv.generate_arpc_method2(sk, arqc, bytes(4))
    emv.verify_arpc_method2(sk, arqc, bytes(4), arpc2)
    with pytest.raises(CryptogramInvalid):
        emv.verify_arpc_method2(sk, arqc, bytes(4), flip(arpc2))


def test_provider_authorize_replay(world: World, pan: str) -> None:
    _, prov, term = world
    card = prov.issue_card(pan, "1234", "3012")
    data = emv.arqc_data(amount=1, currency_code=156, country_code=156, date="260102",
                         unpredictable_number=os.urandom(4), atc=9)
    arqc = emv.generate_arqc(emv.derive_session_key(card.icc_master_key, 9), data)
    blob = world[0].reencrypt_pan("T-1", "bank-a", term.encrypt_pan(pan, "c"), "c")
    arpc = prov.authorize_cryptogram(blob, "c", "00", 9, data, arqc, b"00", last_atc=8)
    emv.verify_arpc_method1(emv.derive_session_key(card.icc_master_key, 9), arqc, b"00", arpc)
    with pytest.raises(AtcReplayed):
        prov.authorize_cryptogram(blob, "c", "00", 9, data, arqc, b"00", last_atc=9)


def test_provider_check_then_arpc_keeps_only_a_verified_cryptogram(world: World,
                                                                   pan: str) -> None:
    """The decision's two calls (check, then ARPC for the response code) give the ARPC of the
    card's session key; a wrong ARQC after a good one, or a good one after a wrong one, is
    judged on its own inputs."""
    _, prov, term = world
    card = prov.issue_card(pan, "1234", "3012")
    data = emv.arqc_data(amount=1, currency_code=156, country_code=156, date="260102",
                         unpredictable_number=os.urandom(4), atc=9)
    sk = emv.derive_session_key(card.icc_master_key, 9)
    arqc = emv.generate_arqc(sk, data)
    blob = world[0].reencrypt_pan("T-1", "bank-a", term.encrypt_pan(pan, "c"), "c")
    assert prov.authorize_cryptogram(blob, "c", "00", 9, data, arqc, None, last_atc=None) == b""
    arpc = prov.authorize_cryptogram(blob, "c", "00", 9, data, arqc, b"51", last_atc=None)
    emv.verify_arpc_method1(sk, arqc, b"51", arpc)
    with pytest.raises(CryptogramInvalid):  # right after a good one: its own inputs decide
        prov.authorize_cryptogram(blob, "c", "00", 9, data, flip(arqc), b"00", last_atc=None)
    with pytest.raises(CryptogramInvalid):  # the other data under the same ARQC
        prov.authorize_cryptogram(blob, "c", "00", 9, flip(data), arqc, b"00", last_atc=None)
    with pytest.raises(CryptogramInvalid):  # a failure is not kept: it fails again
        prov.authorize_cryptogram(blob, "c", "00", 9, data, flip(arqc), None, last_atc=None)
    assert prov.authorize_cryptogram(blob, "c", "00", 9, data, arqc, b"51",
                                     last_atc=None) == arpc
    with pytest.raises(UnwrapError):  # the PAN kept from the last call opens no other context
        prov.authorize_cryptogram(blob, "other", "00", 9, data, arqc, b"00", last_atc=None)


# --- PIN ------------------------------------------------------------------------------------
def test_pin_block_failures(pan: str, pan_factory) -> None:  # type: ignore[no-untyped-def]
    key = new_key(KeyAlg.AES)
    block = pin.make_pin_block(key, "4321", pan)
    with pytest.raises(PinBlockError):  # wrong key: the format check fails
        pin.translate_pin_block(new_key(KeyAlg.AES), key, block, pan)
    with pytest.raises(PinBlockError):  # truncated
        pin.translate_pin_block(key, key, block[:15], pan)
    with pytest.raises(PinBlockError):  # flipped bit
        pin.translate_pin_block(key, key, flip(block, 3), pan)
    with pytest.raises(PinBlockError):  # another PAN (format 4 binds the PAN)
        pin.translate_pin_block(key, key, block, pan_factory())
    with pytest.raises(PinBlockError):
        pin.make_pin_block(key, "12", pan)


def test_pin_verification(world: World, pan: str) -> None:
    plat, prov, term = world
    card = prov.issue_card(pan, "2580", "3012")
    blob = term.encrypt_pan(pan, "c")
    prov_blob = plat.reencrypt_pan("T-1", "bank-a", blob, "c")
    for typed, ok in (("2580", True), ("2581", False)):
        kid, block = term.pin_block(typed, pan)
        pkid, pblock = plat.translate_pin("T-1", "bank-a", kid, block, blob, "c")
        assert prov.verify_pin(pkid, pblock, prov_blob, "c", card.pvv) is ok
    with pytest.raises(KeyUsageError):  # terminal MAC key named as a PIN key
        plat.translate_pin("T-1", "bank-a", "tmk:T-1.v1", block, blob, "c")
    with pytest.raises(KeyUsageError):  # another terminal's PIN key id
        plat.translate_pin("T-2", "bank-a", kid, block, blob, "c")


def test_ibm3624_offset(pan: str) -> None:
    pvk, key = new_key(KeyAlg.TDES), new_key(KeyAlg.AES)
    offset = pin.ibm3624_offset(pvk, "9876", pan)
    assert pin.verify_pin_offset(key, pin.make_pin_block(key, "9876", pan), pan, pvk, offset)
    assert not pin.verify_pin_offset(key, pin.make_pin_block(key, "9877", pan), pan, pvk, offset)


# --- PAN ------------------------------------------------------------------------------------
def test_pan_blob_failures(pan: str) -> None:
    a, b = PanCipher("tpan:T-1.v1", new_key(KeyAlg.AES)), PanCipher("pan:x.v1", new_key(KeyAlg.AES))
    blob = a.encrypt(pan, "corr-1")
    assert reencrypt_pan(a, b, blob, "corr-1").key_id == "pan:x.v1"
    with pytest.raises(UnwrapError):  # another context (replayed into another payment)
        a.decrypt(blob, "corr-2")
    with pytest.raises(UnwrapError):  # another key
        b.decrypt(blob, "corr-1")
    with pytest.raises(UnwrapError):
        a.decrypt(blob.model_copy(update={"ct": flip_b64(blob.ct)}), "corr-1")
    relabelled = EncryptedBlob(**{**blob.model_dump(), "key_id": "tpan:T-1.v1"})
    with pytest.raises(UnwrapError):
        PanCipher("tpan:T-1.v1", new_key(KeyAlg.AES)).decrypt(relabelled, "corr-1")


# --- card authentication ----------------------------------------------------------------------
def test_card_authentication_failures(world: World, pan: str, pan_factory) -> None:  # type: ignore[no-untyped-def]
    _, prov, term = world
    card = prov.issue_card(pan, "1111", "3012")
    un = os.urandom(4)
    sig = card_auth.card_sign(card.card_private_key, un, 3)
    today = date(2026, 5, 1)
    term.verify_card(card.certificate, un, 3, sig, today=today, pan=pan)
    cases = [
        (card.certificate, un, 3, flip(sig, 100), today, pan),  # flipped signature bit
        (card.certificate, os.urandom(4), 3, sig, today, pan),  # another UN (replayed answer)
        (card.certificate, un, 4, sig, today, pan),  # another ATC
        (card.certificate, un, 3, sig, date(2031, 1, 1), pan),  # expired certificate
        (card.certificate, un, 3, sig, today, pan_factory()),  # certificate of another PAN
        (card.certificate.model_copy(update={"expiry": "3112"}), un, 3, sig, today, pan),
        # a card that does not hold the certified key
        (card.certificate, un, 3, card_auth.card_sign(card_auth.new_card_key()[0], un, 3),
         today, pan),
    ]
    for cert, u, atc, s, day, p in cases:
        with pytest.raises(CardAuthenticationError):
            term.verify_card(cert, u, atc, s, today=day, pan=p)
    # a certificate signed by a key the terminal does not trust
    rogue = ProviderHsm("bank-a", type(prov.keys)(prov.keys._keyring))
    rogue_card = rogue.issue_card(pan, "1111", "3012")
    rsig = card_auth.card_sign(rogue_card.card_private_key, un, 3)
    with pytest.raises(CardAuthenticationError):
        term.verify_card(rogue_card.certificate, un, 3, rsig, today=today)


# --- transit load -----------------------------------------------------------------------------
def test_transit_load_sequence_and_failures(world: World) -> None:
    _, op, _ = world
    card_no = "1000000012345678"
    dlk, dtk = op.transit_card_keys(card_no)
    rnd, seq, when = os.urandom(4), 17, "20260102030405"
    mac1 = transit.card_load_mac1(dlk, rnd, seq, 500, 2000, "T-1")
    mac2 = op.authorize_load(card_no, rnd, seq, 500, 2000, "T-1", when, mac1)
    transit.verify_operator_mac2(dlk, rnd, seq, 2000, "T-1", when, mac2)
    tac = transit.card_tac(dtk, 2500, seq, 2000, "T-1", when)
    op.verify_load_tac(card_no, 2500, seq, 2000, "T-1", when, tac)
    with pytest.raises(MacInvalid):  # MAC1 for another amount
        op.authorize_load(card_no, rnd, seq, 500, 20000, "T-1", when, mac1)
    with pytest.raises(MacInvalid):  # MAC1 from another card
        op.authorize_load("1000000012345679", rnd, seq, 500, 2000, "T-1", when, mac1)
    with pytest.raises(MacInvalid):  # the card refuses a forged MAC2
        transit.verify_operator_mac2(dlk, rnd, seq, 2000, "T-1", when, flip(mac2))
    with pytest.raises(MacInvalid):  # MAC2 replayed into a later load (new random)
        transit.verify_operator_mac2(dlk, os.urandom(4), seq + 1, 2000, "T-1", when, mac2)
    with pytest.raises(MacInvalid):  # TAC claiming another balance
        op.verify_load_tac(card_no, 2600, seq, 2000, "T-1", when, tac)
    with pytest.raises(MacInvalid):  # TAC from another terminal id
        op.verify_load_tac(card_no, 2500, seq, 2000, "T-2", when, tac)
