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
