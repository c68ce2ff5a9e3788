"""The key modules use a key only for the party its record names as owner, whatever the key's id
says: a record of another owner (a key store mis-provisioned or tampered) is refused, for every
operation that names one. Also each HSM error's exact one-line reason, the BIN's length, a
card's sequence number in its issuer scripts, the purse's label and TDES check values, the
PVV's key index, and a terminal's MAC key rotation."""

from __future__ import annotations

from datetime import date

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from cardbus.crypto import issuer_script
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import KeyStore, StorageKeyring
from cardbus.crypto.signing import MacSealer, seal_event
from cardbus.errors import CardAuthenticationError, KeyUsageError, MacInvalid, UnwrapError
from schemas.samples import sample_event

World = tuple[PlatformHsm, ProviderHsm, TerminalHsm]
CTX = "pay-1"


def _alien(keys: KeyStore, key_id: str, usage: KeyUsage, owner: str,
           alg: KeyAlg = KeyAlg.AES, key: bytes | None = None) -> str:
    """Store the next version of ``key_id`` owned by ``owner``; its versioned id."""
    rec = keys.put(key_id, usage, owner, alg, key if key is not None else new_key(alg))
    return f"{key_id}.v{rec.version}"


def _refused(exc: pytest.ExceptionInfo[KeyUsageError], key_id: str, owner: str,
             expected: str) -> None:
    assert str(exc.value) == f"key {key_id} belongs to {owner}, not {expected}"


# -- the platform -------------------------------------------------------------------------------

def test_translate_pin_refuses_a_source_key_of_another_terminal(world: World, pan: str) -> None:
    plat, _, term = world
    vid, block = term.pin_block("1234", pan)
    alien = _alien(plat.keys, "tpk:T-1", KeyUsage.PIN_ENC, "terminal:T-2")
    with pytest.raises(KeyUsageError) as exc:
        plat.translate_pin("T-1", "bank-a", alien, block, term.encrypt_pan(pan, CTX), CTX)
    _refused(exc, "tpk:T-1", "terminal:T-2", "terminal:T-1")
    assert vid == "tpk:T-1.v1"


def test_translate_pin_refuses_a_target_key_of_another_provider(world: World, pan: str) -> None:
    plat, _, term = world
    vid, block = term.pin_block("1234", pan)
    _alien(plat.keys, "pin:bank-a", KeyUsage.PIN_ENC, "provider:bank-b")
    with pytest.raises(KeyUsageError) as exc:
        plat.translate_pin("T-1", "bank-a", vid, block, term.encrypt_pan(pan, CTX), CTX)
    _refused(exc, "pin:bank-a", "provider:bank-b", "provider:bank-a")


def test_a_terminal_pan_key_of_another_owner_is_refused(world: World, pan: str) -> None:
    plat, _, term = world
    blob = term.encrypt_pan(pan, CTX)
    alien = _alien(plat.keys, "tpan:T-1", KeyUsage.PAN_ENC, "terminal:T-2")
    with pytest.raises(KeyUsageError) as exc:
        plat.pan_token("T-1", blob.model_copy(update={"key_id": alien}), CTX)
    _refused(exc, "tpan:T-1", "terminal:T-2", "terminal:T-1")


def test_reencrypt_pan_refuses_a_provider_pan_key_of_another_owner(world: World,
                                                                    pan: str) -> None:
    plat, _, term = world
    _alien(plat.keys, "pan:bank-a", KeyUsage.PAN_ENC, "provider:bank-b")
    with pytest.raises(KeyUsageError) as exc:
        plat.reencrypt_pan("T-1", "bank-a", term.encrypt_pan(pan, CTX), CTX)
    _refused(exc, "pan:bank-a", "provider:bank-b", "provider:bank-a")


def test_a_mac_key_of_another_terminal_does_not_verify(world: World) -> None:
    """A MAC under a key stored as ``tmk:T-1`` but owned by T-2 is not T-1's MAC."""
    plat, _, term = world
    event = sample_event("PaymentRequested")
    plat.verify_terminal_mac("T-1", term.mac_event(event))  # T-1's own: verifies
    key = new_key(KeyAlg.HMAC)
    alien = _alien(plat.keys, "tmk:T-1", KeyUsage.MAC, "terminal:T-2", KeyAlg.HMAC, key)
    with pytest.raises(MacInvalid):
        plat.verify_terminal_mac("T-1", seal_event(event, MacSealer(alien, key)))


def _kbpk_of_another_owner() -> tuple[PlatformHsm, ProviderHsm]:
    plat = PlatformHsm(KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    prov = ProviderHsm("bank-a", KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    kbpk = new_key(KeyAlg.AES)
    prov.import_kbpk(kbpk)
    plat.keys.put("kbpk:bank-a", KeyUsage.KBPK, "provider:bank-b", KeyAlg.AES, kbpk)
    return plat, prov


def test_a_kbpk_of_another_provider_opens_no_key_block() -> None:
    plat, prov = _kbpk_of_another_owner()
    with pytest.raises(KeyUsageError) as exc:
        plat.accept_key_block("bank-a", KeyUsage.PIN_ENC, prov.export_key_block(KeyUsage.PIN_ENC))
    _refused(exc, "kbpk:bank-a", "provider:bank-b", "provider:bank-a")


def test_a_kbpk_of_another_operator_opens_no_purse() -> None:
    plat, prov = _kbpk_of_another_owner()
    with pytest.raises(KeyUsageError) as exc:
        plat.open_purse("bank-a", prov.purse_for_platform("12345678", CTX), CTX, "Metro")
    _refused(exc, "kbpk:bank-a", "provider:bank-b", "provider:bank-a")


def test_a_purse_number_under_a_pan_key_of_another_owner_is_refused(world: World) -> None:
    plat, prov, _ = world
    rec = prov.keys.generate("pan:bank-a", KeyUsage.PAN_ENC, "provider:bank-a", KeyAlg.AES)
    key = prov.keys.key("pan:bank-a", KeyUsage.PAN_ENC, version=rec.version)
    plat.keys.put("pan:bank-a", KeyUsage.PAN_ENC, "provider:bank-b", KeyAlg.AES, key,
                  version=rec.version)
    purse = prov.purse_for_platform("12345678", CTX)
    assert purse.number.key_id == f"pan:bank-a.v{rec.version}"
    with pytest.raises(KeyUsageError) as exc:
        plat.open_purse("bank-a", purse, CTX, "Metro")
    _refused(exc, "pan:bank-a", "provider:bank-b", "provider:bank-a")


def test_an_isd_master_of_another_issuer_is_refused(world: World) -> None:
    plat, _, _ = world
    plat.keys.put("isd:bank-a", KeyUsage.GP_ISD_MASTER, "provider:bank-b", KeyAlg.AES,
                  new_key(KeyAlg.AES, 16))
    with pytest.raises(KeyUsageError) as exc:
        plat.isd_card_keys("bank-a", bytes(10))
    _refused(exc, "isd:bank-a", "provider:bank-b", "provider:bank-a")


def test_an_opened_purse_keeps_its_label_and_number(world: World) -> None:
    plat, prov, _ = world
    perso = plat.open_purse("bank-a", prov.purse_for_platform("12345678", CTX), CTX, "Metro")
    assert (perso.label, perso.card_number) == ("Metro", "12345678")


def test_the_bin_is_the_first_six_digits(world: World, pan: str) -> None:
    plat, _, term = world
    assert plat.bin_of("T-1", term.encrypt_pan(pan, CTX), CTX) == pan[:6]
    assert len(pan) > 6


def test_platform_refusals_name_the_key(world: World, pan: str) -> None:
    plat, prov, term = world
    blob = term.encrypt_pan(pan, CTX)
    with pytest.raises(UnwrapError) as unwrap:
        plat.pan_token("T-1", blob.model_copy(update={"key_id": "tpan:T-2.v1"}), CTX)
    assert str(unwrap.value) == "PAN blob is under tpan:T-2.v1, not terminal T-1"
    _, block = term.pin_block("1234", pan)
    with pytest.raises(KeyUsageError) as usage:
        plat.translate_pin("T-1", "bank-a", "tpk:T-2.v1", block, blob, CTX)
    assert str(usage.value) == "tpk:T-2.v1 is not a PIN key of terminal T-1"
    purse = prov.purse_for_platform("12345678", CTX)
    stray = purse.number.model_copy(update={"key_id": "pan:bank-b.v1"})
    with pytest.raises(UnwrapError) as number:
        plat.open_purse("bank-a", type(purse)(**{**purse.__dict__, "number": stray}), CTX, "M")
    assert str(number.value) == "purse number is under pan:bank-b.v1, not bank-a"


# -- the provider -------------------------------------------------------------------------------

def _provider_blob(world: World, pan: str) -> object:
    plat, _, term = world
    return plat.reencrypt_pan("T-1", "bank-a", term.encrypt_pan(pan, CTX), CTX)


def test_a_provider_pan_key_of_another_owner_is_refused(world: World, pan: str) -> None:
    _, prov, _ = world
    blob = _provider_blob(world, pan)
    alien = _alien(prov.keys, "pan:bank-a", KeyUsage.PAN_ENC, "provider:bank-b")
    with pytest.raises(KeyUsageError) as exc:
        prov.pan_token(blob.model_copy(update={"key_id": alien}), CTX)  # type: ignore[attr-defined]
    _refused(exc, "pan:bank-a", "provider:bank-b", "provider:bank-a")
    with pytest.raises(KeyUsageError) as purse:
        prov.purse_for_platform("12345678", CTX)  # the newest PAN key: the alien one
    _refused(purse, "pan:bank-a", "provider:bank-b", "provider:bank-a")


def test_verify_pin_refuses_a_pin_key_of_another_owner(world: World, pan: str) -> None:
    _, prov, _ = world
    blob = _provider_blob(world, pan)
    alien = _alien(prov.keys, "pin:bank-a", KeyUsage.PIN_ENC, "provider:bank-b")
    with pytest.raises(KeyUsageError) as exc:
        prov.verify_pin(alien, bytes(16), blob, CTX, "1234")  # type: ignore[arg-type]
    _refused(exc, "pin:bank-a", "provider:bank-b", "provider:bank-a")


def test_provider_refusals_name_the_key(world: World, pan: str) -> None:
    _, prov, _ = world
    blob = _provider_blob(world, pan)
    with pytest.raises(UnwrapError) as other:
        prov.pan_token(blob.model_copy(update={"key_id": "pan:bank-b.v1"}), CTX)  # type: ignore[attr-defined]
    assert str(other.value) == "PAN blob is under pan:bank-b.v1, not ours"
    sealed = prov.seal_card_secret("4821", "TOKEN-1")
    with pytest.raises(UnwrapError) as foreign:
        prov.verify_pin_sealed("pin:bank-a.v1", bytes(16), blob,  # type: ignore[arg-type]
                               CTX, sealed.model_copy(update={"key_id": "pvd:bank-b.v1"}),
                               "TOKEN-1")
    assert str(foreign.value) == "sealed PVV is under pvd:bank-b.v1, not our PIN data key"
    with pytest.raises(UnwrapError) as wrong_card:
        prov.verify_pin_sealed("pin:bank-a.v1", bytes(16), blob, CTX,  # type: ignore[arg-type]
                               sealed, "TOKEN-2")
    assert str(wrong_card.value) == "sealed PVV does not open (another card, or tampered)"


def test_the_pvv_key_index_is_part_of_the_check(world: World, pan: str) -> None:
    """Cards are issued with PVKI 1 (the default); the same PIN checked under key index 2 is
    another PVV, so it does not verify."""
    plat, prov, term = world
    profile = prov.issue_card(pan, "4821", "2812")
    sealed = prov.seal_card_secret(profile.pvv, profile.pan_token)
    vid, block = term.pin_block("4821", pan)
    tblob = term.encrypt_pan(pan, CTX)
    pin_key, pblock = plat.translate_pin("T-1", "bank-a", vid, block, tblob, CTX)
    blob = plat.reencrypt_pan("T-1", "bank-a", tblob, CTX)
    assert prov.verify_pin_sealed(pin_key, pblock, blob, CTX, sealed, profile.pan_token)
    assert not prov.verify_pin_sealed(pin_key, pblock, blob, CTX, sealed, profile.pan_token,
                                      pvki="2")


def test_issuer_scripts_use_the_card_s_sequence_number(world: World, pan: str) -> None:
    """A card with PAN sequence number 01: its script key is derived with 01, so the card
    accepts the script the HSM makes for psn 01."""
    _, prov, _ = world
    profile = prov.issue_card(pan, "4821", "2812", psn="01")
    cryptogram = bytes.fromhex("1122334455667788")
    command = prov.issuer_script(_provider_blob(world, pan), CTX, "01", 7,  # type: ignore[arg-type]
                                 cryptogram, block=True)
    issuer_script.verify_script_command(profile.icc_mk_smi, command, 7, cryptogram)


def _tdes_kcv(key: bytes) -> str:
    """The legacy TDES key check value: the first 3 bytes of E(key, 0^8), computed here with
    cryptography's TripleDES directly."""
    enc = Cipher(TripleDES(key), modes.ECB()).encryptor()  # noqa: S305 - KCV is ECB by definition
    return (enc.update(bytes(8)) + enc.finalize())[:3].hex().upper()


def test_purse_check_values_are_tdes_kcvs(world: World) -> None:
    _, prov, _ = world
    purse = prov.purse_for_platform("12345678", CTX)
    dlk, dtk = prov.transit_card_keys(purse.card_token)
    assert (purse.load_kcv, purse.tac_kcv) == (_tdes_kcv(dlk), _tdes_kcv(dtk))


# -- the terminal -------------------------------------------------------------------------------

def test_a_terminal_seals_with_its_newest_mac_key(world: World) -> None:
    plat, _, term = world
    event = sample_event("PaymentRequested")
    assert term.mac_event(event).seal.key_id == "tmk:T-1.v1"  # type: ignore[union-attr]
    for blob in plat.enroll_terminal("T-1", term.public_kex()):
        term.install(blob)
    resealed = term.mac_event(event)
    assert resealed.seal.key_id == "tmk:T-1.v2"  # type: ignore[union-attr]
    plat.verify_terminal_mac("T-1", resealed)


def test_a_card_of_an_untrusted_issuer_is_refused_by_name(world: World) -> None:
    _, prov, term = world
    other = ProviderHsm("bank-z", KeyStore(StorageKeyring({1: new_key(KeyAlg.AES)})))
    profile = other.issue_card("6222020000000001", "4821", "2812")
    with pytest.raises(CardAuthenticationError) as exc:
        term.verify_card(profile.certificate, bytes(4), 1, bytes(64),
                         today=date(2026, 1, 1))
    assert str(exc.value) == f"no trusted card-auth key {profile.certificate.ca_key_id}"
    assert prov.card_ca_verifier.key_id != profile.certificate.ca_key_id
