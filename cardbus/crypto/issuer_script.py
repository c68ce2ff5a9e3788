"""EMV issuer scripts with secure messaging for integrity (EMV 4.3 Book 2 section 9.2, format
2; Book 3 section 6.5 APPLICATION BLOCK / UNBLOCK), built by the issuer and checked by the
card.

- The card's ICC master key for secure messaging integrity (MK-SMI) comes from the issuer's
  IMK-SMI like its AC key: option A over PAN and PSN (``emv.derive_icc_master_key``).
- The session key is the EMV common session key with R = the application cryptogram the card
  produced in this transaction (ARQC, or AAC for a blocked card): Book 2 A1.3.1, as pyemv's
  CVN 22 / CVN 16-21 classes do it (``_derive_sk_sm_common``).
- The MAC (8 bytes, ISO 9797-1 algorithm 3, padding method 2) covers the command header with
  Lc counting the MAC, then the transaction's ATC and cryptogram, then the command data:
  ``CLA INS P1 P2 Lc || ATC || AC || data`` (``pyemv.sm.generate_command_mac``).

Because the MAC is bound to the ATC and cryptogram of one transaction, a script captured from
one tap fails at any other: replays are refused by construction.
"""

from __future__ import annotations

import hmac

from pyemv import kd, sm

from cardbus.errors import CryptogramInvalid, MacInvalid

CLA_SM = 0x84
INS_APPLICATION_BLOCK = 0x1E
INS_APPLICATION_UNBLOCK = 0x18
SCRIPT_MAC_LEN = 8


def script_session_key(icc_mk_smi: bytes, application_cryptogram: bytes) -> bytes:
    """SK-SMI: common session key derivation with R = the application cryptogram."""
    if len(application_cryptogram) != 8:
        raise CryptogramInvalid("an application cryptogram is 8 bytes")
    return kd.derive_common_sk(icc_mk_smi, application_cryptogram)


def script_mac_with_session_key(sk_smi: bytes, header: bytes, atc: int,
                                application_cryptogram: bytes, data: bytes = b"") -> bytes:
    """The 8-byte MAC under SK-SMI over ``header`` (CLA INS P1 P2 Lc, Lc including the MAC),
    the ATC, the cryptogram and ``data``."""
    if len(header) != 5 or len(application_cryptogram) != 8 or not 0 <= atc <= 0xFFFF:
        raise MacInvalid("a script header is 5 bytes, a cryptogram 8, an ATC 2")
    return sm.generate_command_mac(sk_smi, header + atc.to_bytes(2, "big")
                                   + application_cryptogram + data, SCRIPT_MAC_LEN)


def script_mac(icc_mk_smi: bytes, header: bytes, atc: int, application_cryptogram: bytes,
               data: bytes = b"") -> bytes:
    """``script_mac_with_session_key`` under the session key of this transaction."""
    return script_mac_with_session_key(script_session_key(icc_mk_smi, application_cryptogram),
                                       header, atc, application_cryptogram, data)


def script_command(icc_mk_smi: bytes, ins: int, atc: int, application_cryptogram: bytes,
                   data: bytes = b"", p1: int = 0x00, p2: int = 0x00) -> bytes:
    """A complete issuer script command (CLA '84') with its MAC, for the card."""
    header = bytes([CLA_SM, ins, p1, p2, len(data) + SCRIPT_MAC_LEN])
    return header + data + script_mac(icc_mk_smi, header, atc, application_cryptogram, data)


def application_block(icc_mk_smi: bytes, atc: int, application_cryptogram: bytes) -> bytes:
    """APPLICATION BLOCK (INS '1E') for the transaction with ``atc`` and its cryptogram."""
    return script_command(icc_mk_smi, INS_APPLICATION_BLOCK, atc, application_cryptogram)


def application_unblock(icc_mk_smi: bytes, atc: int, application_cryptogram: bytes) -> bytes:
    """APPLICATION UNBLOCK (INS '18')."""
    return script_command(icc_mk_smi, INS_APPLICATION_UNBLOCK, atc, application_cryptogram)


def verify_script_command(icc_mk_smi: bytes, command: bytes, atc: int,
                          application_cryptogram: bytes) -> bytes:
    """Card side: check a script command's MAC; returns its data (without the MAC).
    ``MacInvalid`` when the MAC does not verify (tampered, replayed, other transaction)."""
    if len(command) < 5 + SCRIPT_MAC_LEN or command[0] != CLA_SM \
            or command[4] != len(command) - 5:
        raise MacInvalid("not a script command with secure messaging")
    header, data, mac = command[:5], command[5:-SCRIPT_MAC_LEN], command[-SCRIPT_MAC_LEN:]
    want = script_mac(icc_mk_smi, header, atc, application_cryptogram, data)
    if not hmac.compare_digest(want, mac):
        raise MacInvalid("issuer script MAC does not verify")
    return data
