"""PIN blocks, PAN encryption and the terminal key wrap at their edges: the AES key lengths a
PIN block takes, each refusal's exact one-line reason (digits masked where psec's reason could
carry the PIN), a blob's algorithm and key id each checked on their own, the 12-byte GCM nonces
on the wire, a PAN cipher's nonce budget named after its key, and the key wrap opened by a
reference written from its specification (the module docstring: X25519, HKDF-SHA256 with the
salt and info it names, AES-256-GCM over the binding), so a terminal built elsewhere can open it.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cardbus.crypto import pin
from cardbus.crypto.cache import GCM_RANDOM_NONCE_LIMIT
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import b64d
from cardbus.crypto.pan import PanCipher
from cardbus.crypto.wrap import ALG, unwrap_for_terminal, wrap_for_terminal
from cardbus.errors import KeyUsageError, PinBlockError, UnwrapError

PAN = "6222021234567890"
K16, K24, K32 = bytes(range(16)), bytes(range(24)), bytes(range(32))
ZPK = bytes(range(16, 32))

# -- PIN blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [K16, K24, K32], ids=["AES-128", "AES-192", "AES-256"])
def test_a_pin_block_takes_every_aes_key_length(key: bytes) -> None:
    block = pin.make_pin_block(key, "4821", PAN)
    assert len(block) == 16
    pvv = pin.visa_pvv(ZPK, "1", "4821", PAN)
    assert pin.verify_pin_pvv(key, block, PAN, ZPK, "1", pvv)
    assert not pin.verify_pin_pvv(key, pin.make_pin_block(key, "4822", PAN), PAN, ZPK, "1", pvv)


def test_pin_refusals_say_why_without_digits() -> None:
    with pytest.raises(KeyUsageError) as key:
        pin.make_pin_block(bytes(20), "4821", PAN)
    assert str(key.value) == "PIN block key must be an AES key"
    with pytest.raises(PinBlockError) as short:
        pin.verify_pin_pvv(K16, bytes(15), PAN, ZPK, "1", "0000")
    assert str(short.value) == "format 4 PIN block must be 16 bytes, got 15"
    with pytest.raises(PinBlockError) as garbage:
        pin.verify_pin_pvv(K16, bytes(16), PAN, ZPK, "1", "0000")
    assert str(garbage.value) == \
        "PIN block does not decipher: PIN block is not ISO format #: control field `#`"
    with pytest.raises(KeyUsageError) as zpk:
        pin.translate_to_iso0(K16, bytes(24), pin.make_pin_block(K16, "4821", PAN), PAN)
    assert str(zpk.value) == "a zone PIN key must be a double-length TDES key"
    with pytest.raises(PinBlockError) as format0:  # format 0 needs 12 PAN digits besides the check
        pin.translate_to_iso0(K16, ZPK, pin.make_pin_block(K16, "4821", "123456789012"),
                              "123456789012")
    assert str(format0.value) == "cannot make a format 0 PIN block: PAN must be at least ## digits long"
    with pytest.raises(PinBlockError) as offset:
        pin.ibm3624_offset(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), "12a4", PAN)
    assert str(offset.value) == "cannot compute PIN offset: PIN must be from # to ## digits"


# -- PAN encryption ------------------------------------------------------------------------------


def test_a_pan_blob_carries_a_12_byte_nonce_and_opens_in_its_context() -> None:
    cipher = PanCipher("pan:x.v1", K32)
    blob = cipher.encrypt(PAN, "pay-1")
    assert len(b64d(blob.nonce)) == 12
    assert cipher.decrypt(blob, "pay-1") == PAN


def test_a_pan_blob_s_algorithm_and_key_are_each_checked() -> None:
    cipher = PanCipher("pan:x.v1", K32)
    blob = cipher.encrypt(PAN, "pay-1")
    with pytest.raises(UnwrapError) as alg:
        cipher.decrypt(blob.model_copy(update={"alg": ALG}), "pay-1")
    assert str(alg.value) == f"PAN blob is {ALG} under pan:x.v1, not pan:x.v1"
    with pytest.raises(UnwrapError) as key:
        cipher.decrypt(blob.model_copy(update={"key_id": "pan:x.v2"}), "pay-1")
    assert str(key.value) == "PAN blob is AES-256-GCM under pan:x.v2, not pan:x.v1"
    with pytest.raises(UnwrapError) as context:
        cipher.decrypt(blob, "pay-2")
    assert str(context.value) == \
        "encrypted PAN does not open (wrong key or context, or tampered)"
    with pytest.raises(KeyUsageError) as short:
        PanCipher("pan:x.v1", K16)
    assert str(short.value) == "PAN encryption key must be AES-256"


def test_a_pan_cipher_s_own_budget_is_named_after_its_key() -> None:
    cipher = PanCipher("pan:x.v1", K32)
    cipher.budget.used = GCM_RANDOM_NONCE_LIMIT
    with pytest.raises(KeyUsageError) as spent:
        cipher.encrypt(PAN, "pay-1")
    assert str(spent.value) == (f"pan:x.v1 has made {GCM_RANDOM_NONCE_LIMIT} AES-GCM encryptions "
                                f"with random nonces, its limit: rotate it")


# -- the terminal key wrap -------------------------------------------------------------------------


def _reference_unwrap(private: X25519PrivateKey, terminal_id: str, key_id: str, usage: str,
                      epk: bytes, nonce: bytes, ct: bytes) -> bytes:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    binding = f"cardbus-wrap-v1|terminal:{terminal_id}|{key_id}|{usage}".encode()
    shared = private.exchange(X25519PublicKey.from_public_bytes(epk))
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"cardbus-terminal-key-wrap-v1",
               info=binding + b"|" + epk + raw).derive(shared)
    return AESGCM(kek).decrypt(nonce, ct, binding)


def test_a_wrapped_key_opens_with_the_specified_construction() -> None:
    terminal = X25519PrivateKey.generate()
    blob = wrap_for_terminal(terminal.public_key(), "T-1", "tpk:T-1.v1", KeyUsage.PIN_ENC, K32)
    assert blob.epk is not None and len(b64d(blob.nonce)) == 12
    assert _reference_unwrap(terminal, "T-1", "tpk:T-1.v1", KeyUsage.PIN_ENC.value,
                             b64d(blob.epk), b64d(blob.nonce), b64d(blob.ct)) == K32


def test_unwrap_refusals_name_the_key() -> None:
    terminal = X25519PrivateKey.generate()
    blob = wrap_for_terminal(terminal.public_key(), "T-1", "tpk:T-1.v1", KeyUsage.PIN_ENC, K32)
    with pytest.raises(UnwrapError) as alg:  # the right epk, but not an ECDH wrap by its name
        unwrap_for_terminal(terminal, "T-1", KeyUsage.PIN_ENC,
                            blob.model_copy(update={"alg": "AES-256-GCM"}))
    assert str(alg.value) == "blob for tpk:T-1.v1 is AES-256-GCM, not an ECDH key wrap"
    with pytest.raises(UnwrapError) as malformed:
        unwrap_for_terminal(terminal, "T-1", KeyUsage.PIN_ENC,
                            blob.model_copy(update={"epk": "AAAA"}))
    assert str(malformed.value) == "wrapped key tpk:T-1.v1 is malformed"
    with pytest.raises(UnwrapError) as other:
        unwrap_for_terminal(terminal, "T-2", KeyUsage.PIN_ENC, blob)
    assert str(other.value) == ("wrapped key tpk:T-1.v1 does not open for terminal T-2 as "
                                f"{KeyUsage.PIN_ENC.value} (wrong terminal, key id or usage, "
                                "or tampered)")
