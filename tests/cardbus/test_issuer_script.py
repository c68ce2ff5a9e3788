"""EMV issuer scripts (APPLICATION BLOCK / UNBLOCK with secure messaging for integrity).

Sources of expected values (none produced by the code under test):
- pyemv 1.5.0 ``pyemv/sm.py`` docstring of ``generate_command_mac``: SK 0123456789ABCDEF
  FEDCBA9876543210, command 8424000008 || ATC FFFF || ARQC 1234567890123456 -> E07B8DF1B4184282.
- pyemv README / PyPI page (1.0.0-1.2.0) "Common Session Key derivation": ICC MK option A of
  IMK 0123..3210, PAN 99012345678901234, PSN 45 = 67F8292358083E5EA7AB7FDA58D53B6B, and R =
  1234567890123456 -> 29B33180E567CE38EA4CBC9D753B0E61.
- pyemv's own CVN implementation ``pyemv.cvn.MasterCardCVN16`` (ICC MK option A, common SM
  session key from the cryptogram, MAC over header || ATC || AC || data), an implementation
  of the whole chain that shares no code path with ``cardbus.crypto.issuer_script`` above
  ``pyemv.sm`` / ``pyemv.kd``.
"""

from __future__ import annotations

import pytest
from pyemv import cvn

from cardbus.crypto import emv, issuer_script
from cardbus.errors import MacInvalid

H = bytes.fromhex


def test_script_mac_pyemv_sm_vector() -> None:
    mac = issuer_script.script_mac_with_session_key(
        H("0123456789ABCDEFFEDCBA9876543210"), H("8424000008"), 0xFFFF, H("1234567890123456"))
    assert mac.hex().upper() == "E07B8DF1B4184282"


def test_script_session_key_pyemv_readme_vector() -> None:
    icc_mk = emv.derive_icc_master_key(H("0123456789ABCDEFFEDCBA9876543210"),
                                       "99012345678901234", "45")
    assert icc_mk.hex().upper() == "67F8292358083E5EA7AB7FDA58D53B6B"
    sk = issuer_script.script_session_key(icc_mk, H("1234567890123456"))
    assert sk.hex().upper() == "29B33180E567CE38EA4CBC9D753B0E61"


@pytest.mark.parametrize("block", [True, False])
def test_block_and_unblock_match_pyemv_mastercard_cvn16(block: bool) -> None:
    imk_ac, imk_smi = H("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), H("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
    pan, psn, atc, ac = "5413330089010434", "00", 0x0042, H("9A3B1C7D2E4F5061")
    ref = cvn.MasterCardCVN16(imk_ac, imk_smi, H("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"), pan, psn)
    ins = 0x1E if block else 0x18
    header = bytes([0x84, ins, 0x00, 0x00, 0x08])
    expected_mac = ref.generate_command_mac(header, ac, atc.to_bytes(2, "big"))
    mk_smi = emv.derive_icc_master_key(imk_smi, pan, psn)
    make = issuer_script.application_block if block else issuer_script.application_unblock
    command = make(mk_smi, atc, ac)
    assert command == header + expected_mac
    assert issuer_script.verify_script_command(mk_smi, command, atc, ac) == b""


def test_tampered_or_replayed_script_is_refused() -> None:
    mk_smi = H("0123456789ABCDEFFEDCBA9876543210")
    atc, ac = 7, H("1122334455667788")
    command = issuer_script.application_block(mk_smi, atc, ac)
    tampered = command[:-1] + bytes([command[-1] ^ 0x01])
    with pytest.raises(MacInvalid):
        issuer_script.verify_script_command(mk_smi, tampered, atc, ac)
    with pytest.raises(MacInvalid):  # the same script at the card's next transaction
        issuer_script.verify_script_command(mk_smi, command, atc + 1, H("8877665544332211"))
    unblock_header = bytes([0x84, 0x18]) + command[2:]  # INS changed, MAC kept
    with pytest.raises(MacInvalid):
        issuer_script.verify_script_command(mk_smi, unblock_header, atc, ac)
    with pytest.raises(MacInvalid):
        issuer_script.verify_script_command(mk_smi, command[:-2], atc, ac)


# -- boundaries and errors, with literal values ----------------------------------------------

SK_VECTOR = H("0123456789ABCDEFFEDCBA9876543210")


def test_script_mac_without_data_is_the_pyemv_vector() -> None:
    """``script_mac`` with no data (its default) MACs header || ATC || AC only: with the ICC
    key whose session key is the pyemv README vector, it equals the MAC under that key."""
    icc_mk = H("67F8292358083E5EA7AB7FDA58D53B6B")
    ac = H("1234567890123456")
    sk = issuer_script.script_session_key(icc_mk, ac)
    assert issuer_script.script_mac(icc_mk, H("8424000008"), 0xFFFF, ac) == \
        issuer_script.script_mac_with_session_key(sk, H("8424000008"), 0xFFFF, ac, b"")


@pytest.mark.parametrize("atc", [0, 0xFFFF])
def test_the_atc_range_ends_are_accepted(atc: int) -> None:
    mac = issuer_script.script_mac_with_session_key(SK_VECTOR, H("8424000008"), atc,
                                                    H("1234567890123456"))
    assert len(mac) == 8


@pytest.mark.parametrize(("header", "atc", "ac"), [
    (H("84240000"), 1, H("1234567890123456")),
    (H("842400000800"), 1, H("1234567890123456")),
    (H("8424000008"), -1, H("1234567890123456")),
    (H("8424000008"), 0x10000, H("1234567890123456")),
    (H("8424000008"), 1, H("12345678901234")),
])
def test_a_malformed_script_mac_input_is_refused(header: bytes, atc: int, ac: bytes) -> None:
    with pytest.raises(MacInvalid) as err:
        issuer_script.script_mac_with_session_key(SK_VECTOR, header, atc, ac)
    assert str(err.value) == "a script header is 5 bytes, a cryptogram 8, an ATC 2"


def test_a_cryptogram_that_is_not_8_bytes_has_no_session_key() -> None:
    from cardbus.errors import CryptogramInvalid

    with pytest.raises(CryptogramInvalid) as err:
        issuer_script.script_session_key(SK_VECTOR, H("12345678901234"))
    assert str(err.value) == "an application cryptogram is 8 bytes"


def test_a_script_command_with_data_round_trips_and_its_mac_covers_the_data() -> None:
    icc_mk = H("67F8292358083E5EA7AB7FDA58D53B6B")
    ac, atc, data = H("1234567890123456"), 0x0042, H("9F4F0102")
    cmd = issuer_script.script_command(icc_mk, 0xDA, atc, ac, data, p1=0x9F, p2=0x4F)
    assert cmd[:5] == H("84DA9F4F0C") and cmd[5:9] == data
    sk = issuer_script.script_session_key(icc_mk, ac)
    assert cmd[9:] == issuer_script.script_mac_with_session_key(sk, cmd[:5], atc, ac, data)
    assert cmd[9:] != issuer_script.script_mac_with_session_key(sk, cmd[:5], atc, ac)
    assert issuer_script.verify_script_command(icc_mk, cmd, atc, ac) == data
    tampered = cmd[:5] + H("9F4F0103") + cmd[9:]
    with pytest.raises(MacInvalid) as err:
        issuer_script.verify_script_command(icc_mk, tampered, atc, ac)
    assert str(err.value) == "issuer script MAC does not verify"


@pytest.mark.parametrize("command", [
    H("04240000080011223344556677"),     # CLA without secure messaging, Lc right
    H("842400000A001122334455667788"),   # Lc one more than the bytes that follow
    H("84240000070011223344556677"[:-2]),  # shorter than header + MAC
    H("8424000001AA"),                    # Lc matches, but no room for a MAC
])
def test_what_is_not_a_script_command_is_refused_as_such(command: bytes) -> None:
    icc_mk = H("67F8292358083E5EA7AB7FDA58D53B6B")
    with pytest.raises(MacInvalid) as err:
        issuer_script.verify_script_command(icc_mk, command, 1, H("1234567890123456"))
    assert str(err.value) == "not a script command with secure messaging"
