"""SCP03 edges with literal values: every length and range bound, the padding rules, the class
byte of protected commands, which status words are protected, and each exact one-line reason
(the card aborts the session on any of them, and the reader shows the reason)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from cardbus.crypto import scp03
from cardbus.errors import KeyUsageError, SecureChannelError

H = bytes.fromhex
KEYS = scp03.SessionKeys(H("11" * 16), H("22" * 16), H("33" * 16))
DEK = H("44" * 16)


def refused(match: str) -> pytest.RaisesContext[SecureChannelError]:
    return pytest.raises(SecureChannelError, match=f"^{match}$")


def cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def test_padding_is_80_then_fewer_than_16_zeros() -> None:
    assert scp03.unpad80(b"abc\x80" + bytes(12)) == b"abc"
    for bad in (bytes(16), b"abc" + bytes(13), b"\x80" + bytes(16), b"abc\x81" + bytes(12)):
        with refused("bad padding in decrypted data"):
            scp03.unpad80(bad)
    assert scp03.unpad80(b"\x80" + bytes(15)) == b""  # 15 zeros: the most padding adds


def test_card_challenge_bounds() -> None:
    key = H("55" * 16)
    for counter, aid in ((0, bytes(5)), (0xFFFFFF, bytes(16)), (1, bytes(8))):
        assert len(scp03.card_challenge(key, counter, aid)) == 8
    assert scp03.card_challenge(key, 1, bytes(8)) == scp03.kdf(
        key, scp03.Derivation.CARD_CHALLENGE, H("000001") + bytes(8), 64)
    for counter, aid in ((-1, bytes(8)), (0x1000000, bytes(8)), (1, bytes(4)), (1, bytes(17))):
        with refused("sequence counter or AID out of range"):
            scp03.card_challenge(key, counter, aid)


@pytest.mark.parametrize(("host", "card"), [(bytes(7), bytes(8)), (bytes(8), bytes(9)),
                                            (bytes(9), bytes(7))])
def test_challenges_are_8_bytes_each(host: bytes, card: bytes) -> None:
    with refused("challenges are 8 bytes each"):
        scp03.card_cryptogram(KEYS, host, card)
    with refused("challenges are 8 bytes each"):
        scp03.host_cryptogram(KEYS, host, card)


def test_sensitive_data_is_whole_blocks() -> None:
    for bad in (b"", bytes(15), bytes(17)):
        with refused("sensitive data must be whole 16-byte blocks"):
            scp03.encrypt_sensitive(DEK, bad)
        with refused("encrypted sensitive data must be whole 16-byte blocks"):
            scp03.decrypt_sensitive(DEK, bad)
    clear = bytes(range(32))
    assert scp03.decrypt_sensitive(DEK, scp03.encrypt_sensitive(DEK, clear)) == clear


def test_put_key_data_is_for_aes_128_only_and_checked_field_by_field() -> None:
    with pytest.raises(KeyUsageError, match=r"^only AES-128 keys are wrapped here$"):
        scp03.put_key_data(DEK, bytes(24))
    key = H("66" * 16)
    data = scp03.put_key_data(DEK, key)
    assert scp03.open_put_key_data(DEK, data) == key
    for bad in (data[:-1], data + b"\x00", b"\x80" + data[1:], data[:1] + b"\x12" + data[2:],
                data[:19] + b"\x02" + data[20:]):
        with refused(r"not an AES-128 key data field \(Table 7-10\)"):
            scp03.open_put_key_data(DEK, bad)
    with refused("key check value does not verify"):
        scp03.open_put_key_data(DEK, data[:20] + bytes(3))


def test_a_protected_command_keeps_the_logical_channel_bits_and_macs_its_header() -> None:
    ch = scp03.begin(KEYS, 0x01)
    _, out = scp03.wrap_command(ch, H("81F21000024F00"))  # class 81: logical channel 1
    assert out[0] == 0x84 and out[1:5] == H("F2100002")[:3] + bytes([2 + 8])
    header = bytes([0x84, 0xF2, 0x10, 0x00, 2 + 8])
    assert out[5:7] == H("4F00")
    assert out[7:15] == cmac(KEYS.s_mac, bytes(16) + header + H("4F00"))[:8]


def test_a_command_fills_a_short_apdu_exactly_and_no_more() -> None:
    ch = scp03.begin(KEYS, 0x01)  # C-MAC only: the data grows by the MAC alone
    _, out = scp03.wrap_command(ch, H("80E20000") + bytes([247]) + bytes(247))
    assert out[4] == 255
    with refused("command too long for a short APDU once protected"):
        scp03.wrap_command(ch, H("80E20000") + bytes([248]) + bytes(248))


def test_unprotected_or_unverifiable_commands_are_refused_by_name() -> None:
    card = scp03.begin(KEYS, 0x03)
    with refused("command lacks secure messaging"):
        scp03.unwrap_command(card, H("80F21000") + bytes([12]) + bytes(12))
    with refused("command lacks secure messaging"):
        scp03.unwrap_command(card, H("84F21000") + bytes([7]) + bytes(7))
    with refused("C-MAC does not verify"):
        scp03.unwrap_command(card, H("84F21000") + bytes([12]) + bytes(12))
    data = bytes(5)  # MACed correctly but not whole blocks under C-DECRYPTION
    header = bytes([0x84, 0xF2, 0x10, 0x00, len(data) + 8])
    mac = cmac(KEYS.s_mac, bytes(16) + header + data)[:8]
    with refused("encrypted command data is not whole blocks"):
        scp03.unwrap_command(card, header + data + mac)


def test_warnings_62xx_and_63xx_are_protected_errors_are_not() -> None:
    ch = scp03.begin(KEYS, 0x13)  # C-MAC, C-DECRYPTION, R-MAC
    for sw in (0x9000, 0x6283, 0x63C1):
        out = scp03.wrap_response(ch, b"", sw)
        assert len(out) == 8 + 2 and out[-2:] == sw.to_bytes(2, "big")
        assert out[:8] == cmac(KEYS.s_rmac, bytes(16) + sw.to_bytes(2, "big"))[:8]
        assert scp03.unwrap_response(ch, out[:-2], sw) == b""
    for sw in (0x6A82, 0x6985, 0x6400):
        assert scp03.wrap_response(ch, b"\x01", sw) == sw.to_bytes(2, "big")
        assert scp03.unwrap_response(ch, b"", sw) == b""
    with refused("error status 6A82 came with data"):
        scp03.unwrap_response(ch, b"\x01", 0x6A82)


def test_responses_without_or_with_a_wrong_r_mac_are_refused_by_name() -> None:
    ch = scp03.begin(KEYS, 0x13)
    with refused("response lacks its R-MAC"):
        scp03.unwrap_response(ch, bytes(7), 0x9000)
    with refused("R-MAC does not verify"):
        scp03.unwrap_response(ch, bytes(8), 0x9000)
    enc = scp03.begin(KEYS, 0x33)  # R-ENCRYPTION too
    data = bytes(5)
    mac = cmac(KEYS.s_rmac, bytes(16) + data + H("9000"))[:8]
    with refused("encrypted response data is not whole blocks"):
        scp03.unwrap_response(enc, data + mac, 0x9000)
    plain = b"hello"
    assert scp03.unwrap_response(enc, scp03.wrap_response(enc, plain, 0x9000)[:-2],
                                 0x9000) == plain
